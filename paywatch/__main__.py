"""``python -m paywatch``: the same as the ``paywatch`` command."""

import sys

from paywatch.cli import main

if __name__ == "__main__":
    sys.exit(main())
