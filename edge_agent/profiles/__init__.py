"""Device profiles: the one data standard every device model is described in."""
