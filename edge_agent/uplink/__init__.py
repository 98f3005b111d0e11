"""MQTT uplink: topics, TLS settings and the store-and-forward session."""

from edge_agent.platform.deferred import defer

# paho-mqtt imports urllib.request (email, http.client...) for proxy settings it reads only with
# PySocks installed: loaded when used, not with the daemon (platform/deferred.py)
defer("urllib.request")
