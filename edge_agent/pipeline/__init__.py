"""Pipeline stages after polling: batching, signing, handing to the outbox."""
