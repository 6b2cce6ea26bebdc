import sys

from orchestra.cli.main import main

sys.exit(main())
