"""The cold-chain engine: probe state machines, alerts, exposure metrics, notifications."""
