"""Data between centers: transfers and copying."""
