"""The SQLite backend of every store (the embedded default)."""
