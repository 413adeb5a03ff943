"""Published applications: their definitions, catalog, rendering and canary verifications."""
