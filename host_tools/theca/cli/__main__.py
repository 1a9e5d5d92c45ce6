"""`python -m theca.cli`: the same as `theca`."""

import sys

from theca.cli import main

sys.exit(main())
