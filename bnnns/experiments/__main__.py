"""``python -m bnnns.experiments``: see :mod:`bnnns.experiments.cli`."""

from bnnns.experiments.cli import main

if __name__ == "__main__":
    main()
