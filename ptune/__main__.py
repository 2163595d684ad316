"""`python -m ptune ...`: the `ptune` command (see `ptune.cli`)."""

import sys

from ptune.cli import main

sys.exit(main())
