"""The device profiles shipped with edge-agent: ``*.toml`` here (and ``examples/``) are package
data, installed with the agent. Code finds them through ``edge_agent.profiles.shipped``, never by a
path next to the source tree (an installed gateway has none)."""
