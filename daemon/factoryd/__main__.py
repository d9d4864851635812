"""`python -m factoryd` is the same program as the `factoryd` console script."""

from factoryd.cli import main

raise SystemExit(main())
