"""`python -m serving ARGS` is `edgerun serve ARGS`."""

import sys

from runtime.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
