"""`python -m outbox.demo [psql ARGS]`: the demo, or psql on its embedded server."""

import sys

from outbox.demo import psql, run_demo

if sys.argv[1:2] == ["psql"]:
    sys.exit(psql(sys.argv[2:]))
sys.exit(run_demo())
