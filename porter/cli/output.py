"""Shared printing for commands: progress to stderr, JSON or text results to stdout."""

from __future__ import annotations

import json
import sys
from typing import Any


def progress_printer(enabled: bool):
    """A progress callback writing to stderr, or a silent one."""

    def show(msg: str) -> None:
        print(f"porter: {msg}", file=sys.stderr, flush=True)

    return show if enabled else (lambda _msg: None)


def emit_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
