"""The service life cycle: supervisor (task tree, signals) and systemd notification."""
