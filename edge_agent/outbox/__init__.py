"""The durable outbox: signed batches kept on disk (SQLite, WAL, fsync) until the broker acks."""
