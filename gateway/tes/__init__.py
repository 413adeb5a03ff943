"""GA4GH Task Execution Service (TES) v1.1 over the gateway's jobs."""
