"""hpcfed gateway: one HTTP interface over many HPC centers."""

__version__ = "0.1.0"
