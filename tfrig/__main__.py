import os
import sys

# `python -m tfrig` puts the current folder first on sys.path, so a folder's invoke.py or yaml.py
# would be imported in place of the library, its code run before tfrig could hold it back. The
# `tfrig` command never does that; neither does this.
sys.path[:] = [entry for entry in sys.path if entry not in ("", os.getcwd())]

from tfrig.cli import main  # noqa: E402 (after the path is safe)

main()
