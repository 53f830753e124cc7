"""`python -m benchmarks`: run every benchmark and write docs/PERFORMANCE.md (see benchmarks.runner)."""

import sys

from benchmarks.runner import main

sys.exit(main())
