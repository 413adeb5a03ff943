"""The PostgreSQL backend (`store.kind: postgres`): every state of the gateway in one
database that several replicas share (docs/deployment.md)."""
