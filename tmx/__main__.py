"""``python -m tmx``: the ``tmx`` command (``tmx run``, ``tmx report``, ``tmx demo``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
