"""The `ticketlab` console script. It imports the command line (and with it torch, which
takes a second or more) under a SIGINT handler that exits at once, quietly, with 130: a
KeyboardInterrupt raised inside a half-imported library (numpy, torch) can leave it broken
and surface later as an unrelated traceback, and nothing has started yet that needs saving."""

from __future__ import annotations

import os
import signal
import sys


def _exit_while_importing(signum: int, frame: object) -> None:
    os.write(2, b"interrupted\n")
    os._exit(130)


def main() -> int:
    signal.signal(signal.SIGINT, _exit_while_importing)
    from ticketlab.cli import main as cli_main

    signal.signal(signal.SIGINT, signal.default_int_handler)  # the CLI handles it from here
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
