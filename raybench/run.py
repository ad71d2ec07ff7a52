"""`python -m raybench.run GRID`: run a grid of trials with Ray Tune (raybench.service.cli)."""

import sys

from raybench.service.cli import main

if __name__ == "__main__":
    sys.exit(main())
