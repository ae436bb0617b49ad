"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest


@pytest.fixture
def error_line(capsys: pytest.CaptureFixture[str]) -> Callable[[], str]:
    """error_line() -> the one error line of the command just run: last on stderr, after any
    progress lines, with no traceback anywhere."""

    def read() -> str:
        err = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in err if line.startswith("porter: error: ")]
        assert len(errors) == 1 and err[-1] == errors[0], err
        assert not any("Traceback" in line for line in err)
        return errors[0]

    return read
