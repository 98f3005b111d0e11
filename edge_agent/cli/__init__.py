"""The `edge-agent` command line: one module per command group (cmd_*.py), found automatically."""
