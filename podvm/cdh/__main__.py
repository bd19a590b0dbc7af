import sys

from podvm.cdh.cli import main

sys.exit(main())
