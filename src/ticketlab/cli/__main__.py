"""`python -m ticketlab.cli`: the command line, exiting with its code."""

import sys

from ticketlab.cli import main

sys.exit(main())
