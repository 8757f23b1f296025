"""The edge agent: station config, device supervision and publishing over MQTT."""
