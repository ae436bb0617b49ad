"""`python -m porter` runs the CLI."""

from porter.cli.main import main

raise SystemExit(main())
