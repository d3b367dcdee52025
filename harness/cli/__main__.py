"""``python -m harness.cli``: what the VM guest runs (the guest has no console script)."""

import sys

from harness.cli.app import main

sys.exit(main())
