"""The Python client of the gateway's HTTP API. It imports nothing of the server."""
