"""Entry point: ``.venv/bin/python bench/run.py [--quick] [--only mosaic,wsgidav,rclone]``.

Also runnable as ``python -m bench.run`` from the repository root.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: import the bench package from the repository root, and
    # keep bench/ itself off the path so its module names shadow nothing.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.main import main

if __name__ == "__main__":
    sys.exit(main())
