"""Supervisor API and dashboard."""
