"""The one-command demo: simulators, a broker, the agent and a verifying consumer."""
