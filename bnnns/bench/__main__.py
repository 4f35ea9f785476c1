"""``python -m bnnns.bench``: :func:`bnnns.bench.cli.main`."""

import sys

from bnnns.bench.cli import main

sys.exit(main())
