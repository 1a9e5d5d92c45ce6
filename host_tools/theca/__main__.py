"""`python -m theca`: the same as `theca`."""

import sys

from theca.cli import main

sys.exit(main())
