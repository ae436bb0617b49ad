"""Zoo fixtures: one suite, run against a local folder and a real S3-protocol server on
loopback (moto's standalone server in a child process, see scripts/zoo_s3_server.py), through
real s3fs clients configured only by the standard AWS environment variables."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "porter-zoo-tests"
_prefixes = itertools.count()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def aws_env(endpoint: str) -> dict[str, str]:
    """What a team's machine would set to reach its S3 endpoint (here: the loopback server)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a moto S3 server started for this session, with the test bucket created."""
    pytest.importorskip("s3fs", reason="the s3 extra (s3fs) is not installed")
    pytest.importorskip("moto.server", reason="moto[server] (dev extra) is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"  # a file: a full pipe would stall it
    proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "zoo_s3_server.py"),
                             str(port)], stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"moto server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
    import s3fs

    s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing").mkdir(BUCKET)
    yield endpoint
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(params=["local", "s3"])
def zoo(request, tmp_path, monkeypatch) -> str | Path:
    """A fresh, empty zoo on each backend; PORTER_CACHE (where pulls go) is per test."""
    monkeypatch.setenv("PORTER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PORTER_ZOO", raising=False)
    if request.param == "local":
        return tmp_path / "zoo"
    endpoint = request.getfixturevalue("s3_endpoint")
    for k, v in aws_env(endpoint).items():
        monkeypatch.setenv(k, v)
    return f"s3://{BUCKET}/t{os.getpid()}-{next(_prefixes)}"
