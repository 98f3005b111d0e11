"""MQTT uplink: topics, TLS settings and the store-and-forward session."""
