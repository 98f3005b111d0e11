"""Signed remote commands: wire model, verification with replay protection, execution, audit."""
