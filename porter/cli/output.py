"""Shared printing for commands: progress to stderr, JSON or text results to stdout."""

from __future__ import annotations

import json
import sys
import time
from typing import Any


def progress_printer(enabled: bool):
    """A progress callback writing stage lines to stderr with the elapsed time, or a silent one.

    Progress always goes to stderr, so ``--json`` output on stdout stays clean.
    """
    start = time.monotonic()

    def show(msg: str) -> None:
        print(f"porter: [{time.monotonic() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    return show if enabled else (lambda _msg: None)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
