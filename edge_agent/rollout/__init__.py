"""Signed configuration rollout: the bundle, its verification, where a gateway keeps it, which
configuration runs, the probation verdict, the signed results (docs/operations.md, "Rollout")."""
