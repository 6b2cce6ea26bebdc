"""``python -m orchestra.job JOB_DIR``: the process every launcher starts for one member."""

import sys

from orchestra.job.body import main

sys.exit(main())
