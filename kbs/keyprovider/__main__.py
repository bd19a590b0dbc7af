import sys

from kbs.keyprovider.cli import main

sys.exit(main())
