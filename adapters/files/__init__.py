"""Confined file access at a center: paths and the operations on them."""
