"""HTTP routes, one module per resource; `gateway.http.app` registers them all."""
