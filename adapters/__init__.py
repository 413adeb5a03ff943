"""Everything that speaks to a center: the Adapter contract and its implementations."""
