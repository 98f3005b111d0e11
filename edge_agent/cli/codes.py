"""Exit codes and default paths every command shares (cli/common.py, which documents them, gives
them to the commands). A module of their own that imports nothing else: the daemon's `run` and
cli/main.py's success path need a few without the rest of cli/common.py and its argparse."""

from __future__ import annotations

from pathlib import Path

DEFAULT_CONFIG = Path("/etc/edge-agent/agent.toml")
DEFAULT_SOCKET = Path("/run/edge-agent/control.sock")
EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NO_DAEMON, EXIT_TIMEOUT = 0, 1, 2, 3, 4
EXIT_INTERRUPTED, EXIT_PIPE = 130, 141
