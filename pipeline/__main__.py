"""`python -m pipeline <step>`: the CLI that dvc.yaml calls."""

import sys

from pipeline.cli import main

sys.exit(main())
