"""`python -m edgerun ARGS` is `edgerun ARGS`."""

import sys

from edgerun.cli import main

if __name__ == "__main__":
    sys.exit(main())
