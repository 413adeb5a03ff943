"""The local center type: jobs run as processes on the gateway's machine."""
