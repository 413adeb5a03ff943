"""`python -m gateway.cli`: the `hpcfed` command."""

import sys

from gateway.cli.main import main

sys.exit(main())
