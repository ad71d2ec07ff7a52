"""`python -m raybench.report results/<name>` (see raybench.report.cli)."""

import sys

from raybench.report.cli import main

sys.exit(main())
