"""`python -m daemon` is the same program as the `factoryd` console script."""

from daemon.cli import main

raise SystemExit(main())
