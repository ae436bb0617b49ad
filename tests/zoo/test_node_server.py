"""porter.zoo.node_server: one forkserver per machine and environment, shared by every caller
(Ray workers and jobs), each call still a child of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from porter.zoo.isolate import ChildTimedOut
from porter.zoo.node_server import run_on_node, server_path, stop_node_server

# the preload is part of the server's identity: these tests get a light server of their own
LIGHT = ("numpy", "tests.zoo.test_node_server")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _server(monkeypatch):
    monkeypatch.setenv("PORTER_NODE_SERVER_IDLE_S", "120")
    yield
    stop_node_server(LIGHT)


def _ids() -> tuple[int, int]:
    return os.getpid(), os.getppid()


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_calls_are_children_of_one_shared_server():
    pid, server = run_on_node(_ids, preload=LIGHT)
    again, server_again = run_on_node(_ids, preload=LIGHT)
    assert pid != again and os.getpid() not in (pid, again)  # a new child per call
    assert server == server_again != os.getpid()  # forked by the same server
    # another process (a new Ray job's worker) reaches the same server, imports already paid
    code = ("import sys; from porter.zoo.node_server import run_on_node;"
            "from tests.zoo.test_node_server import _ids, LIGHT;"
            "print(run_on_node(_ids, preload=LIGHT)[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert int(out.stdout.split()[-1]) == server


def test_concurrent_callers_each_get_their_own_result():
    results: dict[int, float] = {}

    def call(i: int) -> None:
        results[i] = run_on_node(_sleep, 0.2 + i / 100, preload=LIGHT)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: 0.2 + i / 100 for i in range(4)}


def test_other_environments_get_other_servers_and_idle_servers_leave(monkeypatch):
    other = ("numpy", "json", "tests.zoo.test_node_server")
    assert server_path(other) != server_path(LIGHT)
    monkeypatch.setenv("PORTER_NODE_SERVER_IDLE_S", "0.5")
    _, server = run_on_node(_ids, preload=other)
    path = server_path(other)
    assert path.exists()
    for _ in range(200):  # the server checks every few seconds and leaves when idle
        if not path.exists():
            break
        time.sleep(0.1)
    assert not path.exists()
    with pytest.raises(ProcessLookupError):
        for _ in range(50):  # gone, not only its socket
            os.kill(server, 0)
            time.sleep(0.1)


def test_a_caller_leaving_early_does_not_disturb_the_next_calls(monkeypatch):
    """A caller past its deadline closes its connection; the server kills that child and
    keeps serving (it once unregistered the socket twice and died with calls in flight)."""
    import porter.zoo.isolate as isolate

    monkeypatch.setattr(isolate, "KILL_GRACE_S", 0.05)
    done: list[float] = []
    slow = threading.Thread(target=lambda: done.append(run_on_node(_sleep, 1.5, preload=LIGHT)))
    slow.start()  # in flight while the others time out
    for _ in range(5):
        with pytest.raises(ChildTimedOut):
            run_on_node(_sleep, 30, timeout_s=0.05, preload=LIGHT)
        assert run_on_node(_sleep, 0.0, preload=LIGHT) == 0.0
    slow.join()
    assert done == [1.5]
