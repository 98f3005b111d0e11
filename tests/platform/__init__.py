"""Tests of edge_agent.platform (clock state, sd_notify, socket ownership, metrics file)."""
