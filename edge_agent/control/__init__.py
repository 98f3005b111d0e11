"""The local control socket: a Unix domain socket with a line-delimited JSON API for the CLI."""
