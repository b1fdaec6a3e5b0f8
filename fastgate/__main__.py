"""`python -m fastgate`: the same entry point as the `fastgate` script."""

import sys

from fastgate.cli import main

sys.exit(main())
