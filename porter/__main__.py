"""`python -m porter` runs the CLI."""

from porter.cli.main import entry

entry()
