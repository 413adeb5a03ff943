"""The `hpcfed` command."""
