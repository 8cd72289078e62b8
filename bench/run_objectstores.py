"""Entry point: ``.venv/bin/python bench/run_objectstores.py [--quick] [--stores s3,...]``.

Also runnable as ``python -m bench.run_objectstores`` from the repository root.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: import the bench package (and tests.support, whose fixtures
    # start the emulators) from the repository root; keep bench/ itself off the path.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from bench.objectstores import main

if __name__ == "__main__":
    sys.exit(main())
