"""The SQLite backend, the embedded default (`store.kind: sqlite`); its stores are
assembled in `backend`."""
