"""Bus owners: one object per physical line or TCP endpoint, the only code that touches it."""
