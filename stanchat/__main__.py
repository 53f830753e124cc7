import sys

from stanchat.cli import main

sys.exit(main())
