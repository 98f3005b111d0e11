"""MQTT uplink: topics, TLS settings and the store-and-forward session."""

import os

from edge_agent.platform.deferred import defer

# paho-mqtt imports at module level what the daemon does not use; loaded when used, not with the
# daemon (platform/deferred.py): urllib.request (email, http.client...) for proxy settings it
# reads only with PySocks installed; uuid to make up a client id (the uplink always gives one);
# platform for one platform.system() at import (answered as platform answers it on Linux)
defer("urllib.request")
defer("uuid")
defer("platform", system=lambda: os.uname().sysname)
