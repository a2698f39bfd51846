"""``python -m layer_sdk``: the command line (see ``_cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
