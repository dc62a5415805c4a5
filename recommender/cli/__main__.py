"""``python -m recommender.cli``: the ``nbo`` command, for scripts that run it by module."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
