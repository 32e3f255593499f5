"""`python -m ticketlab`: the same as the `ticketlab` command."""

import sys

from ticketlab.entry import main

sys.exit(main())
