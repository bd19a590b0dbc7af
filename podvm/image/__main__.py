"""`python -m podvm.image`."""

import sys

from podvm.image.cli import main

sys.exit(main())
