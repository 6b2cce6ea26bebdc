"""`python -m launch.cluster up|down|status [--dir DIR]`."""

import os
import sys

from launch.cluster.cli import main

try:
    code = main(sys.argv[1:])
    sys.stdout.flush()
except BrokenPipeError:
    # Output piped into `head` or `grep -q`: the reader left early, which is not an error of ours. Point stdout at
    # /dev/null so the interpreter's final flush does not raise again.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 0
sys.exit(code)
