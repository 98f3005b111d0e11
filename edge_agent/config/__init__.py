"""Gateway configuration (agent.toml): model, loading, cross-checks."""
