"""`python -m training.recipes.tiny_results SUBCOMMAND ...`"""

import sys

from training.recipes.tiny_results import main

sys.exit(main())
