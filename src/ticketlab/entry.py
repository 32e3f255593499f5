"""The `ticketlab` console script. It imports the command line (and with it torch, which
takes a second or more) inside a guard, so Ctrl-C at any moment exits quietly with 130."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from ticketlab.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:  # during the imports: nothing has started, nothing to save
        sys.stderr.write("interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
