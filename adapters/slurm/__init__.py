"""The Slurm center type."""
