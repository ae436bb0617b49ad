"""porter.zoo.isolate: one call in a forked child, its value, its exception or how it died."""

from __future__ import annotations

import os
import time

import pytest

from porter.zoo import isolate
from porter.zoo.isolate import ChildCrashed, ChildTimedOut, run_isolated

LIGHT = ("numpy",)  # the forkserver's preload here: the mechanism, not torch's import time


@pytest.fixture(autouse=True, scope="module")
def _stop_light_server():
    yield
    from porter.zoo.node_server import stop_node_server

    stop_node_server(LIGHT)


def _pid_and_sum(values: list[int]) -> tuple[int, int]:
    return os.getpid(), sum(values)


def _leak_then_report(key: str) -> str | None:
    before = os.environ.get(key)
    os.environ[key] = "set in the child"
    return before


def _raise_oserror() -> None:
    raise OSError(5, "input/output error (test)")


def _segfault() -> None:
    import ctypes

    ctypes.string_at(0)


def _exit_quietly() -> None:
    os._exit(3)


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _unpicklable() -> object:
    return lambda: None


def test_value_comes_back_from_a_child_of_its_own():
    pid, total = run_isolated(_pid_and_sum, [1, 2, 3], preload=LIGHT)
    assert total == 6
    assert pid != os.getpid()
    again, _ = run_isolated(_pid_and_sum, [], preload=LIGHT)
    assert again not in (pid, os.getpid())  # a new child per call


def test_child_changes_do_not_reach_the_caller(monkeypatch):
    monkeypatch.delenv("PORTER_ISOLATE_TEST", raising=False)
    assert run_isolated(_leak_then_report, "PORTER_ISOLATE_TEST", preload=LIGHT) is None
    assert "PORTER_ISOLATE_TEST" not in os.environ


def test_exception_is_raised_here_with_its_type():
    with pytest.raises(OSError) as info:
        run_isolated(_raise_oserror, preload=LIGHT)
    assert info.value.errno == 5


def test_native_crash_and_silent_exit_are_reported_not_raised_as_eof():
    with pytest.raises(ChildCrashed, match="killed by SIGSEGV"):
        run_isolated(_segfault, preload=LIGHT)
    with pytest.raises(ChildCrashed, match="exited with status 3 before reporting"):
        run_isolated(_exit_quietly, preload=LIGHT)


def test_child_past_its_deadline_and_grace_is_killed(monkeypatch):
    monkeypatch.setattr(isolate, "KILL_GRACE_S", 0.5)
    t = time.perf_counter()
    with pytest.raises(ChildTimedOut, match="killed"):
        run_isolated(_sleep, 60, timeout_s=0.5, preload=LIGHT)
    assert time.perf_counter() - t < 20


def test_unpicklable_result_becomes_an_error_with_its_text():
    with pytest.raises(RuntimeError, match="not picklable"):
        run_isolated(_unpicklable, preload=LIGHT)


def test_child_does_not_rerun_the_callers_main_script(tmp_path):
    """A Ray worker's __main__ is Ray's default_worker.py; each child used to re-run it."""
    import subprocess
    import sys

    runs = tmp_path / "runs"
    script = tmp_path / "main_script.py"
    script.write_text(
        "import os, pathlib\n"
        f"pathlib.Path({str(runs)!r}).open('a').write(__name__ + '\\n')\n"
        "if __name__ == '__main__':\n"
        "    from porter.zoo.isolate import run_isolated\n"
        "    assert run_isolated(os.getpid, preload=('numpy',)) != os.getpid()\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, str(script)], check=True, env=env, timeout=120)
    assert runs.read_text().split() == ["__main__"]  # not again as __mp_main__


def _environment_seen(key: str) -> tuple[str | None, str]:
    return os.environ.get(key), os.getcwd()


def test_child_sees_the_callers_environment_now_not_the_forkservers(monkeypatch, tmp_path):
    """Ray sets per-task variables (which NPUs a task may use) in a long-lived worker."""
    run_isolated(os.getpid, preload=LIGHT)  # the forkserver is up with the old environment
    monkeypatch.setenv("PORTER_ISOLATE_TASK", "npu:3")
    monkeypatch.chdir(tmp_path)
    assert run_isolated(_environment_seen, "PORTER_ISOLATE_TASK", preload=LIGHT) == (
        "npu:3", str(tmp_path))
    monkeypatch.delenv("PORTER_ISOLATE_TASK")
    assert run_isolated(_environment_seen, "PORTER_ISOLATE_TASK",
                        preload=LIGHT)[0] is None


def test_preload_names_importable_modules_and_every_registry_module():
    """A misspelt name would be skipped silently (and its import paid in every child)."""
    import importlib

    from porter.graphs import GRAPH_MODULES
    from porter.importers import _IMPORTER_MODULES

    for name in isolate.PRELOAD:
        importlib.import_module(name)
    assert set(GRAPH_MODULES) | set(_IMPORTER_MODULES) <= set(isolate.PRELOAD)
