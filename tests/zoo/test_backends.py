"""Issue 15, item 1: the zoo works the same on a local folder and on S3 (a real moto server on
loopback, real s3fs clients): versioned, content-addressed publish, pull, list, verify and gc;
corruption is refused on every pull; killed and concurrent publishers never leave a mix."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from porter.errors import IntegrityError, ZooError
from porter.source import sha256_file
from porter.zoo.layout import blob_key, version_key
from porter.zoo.load import zoo_root
from porter.zoo.publish import gc, list_entries, publish, verify_all, verify_entry
from porter.zoo.pull import pull
from porter.zoo.store import open_store

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


kills = _script("bench_zoo_kills")


def _rewrite(zoo, key: str, data: bytes, tmp_path: Path) -> None:
    """Overwrite one object in the zoo behind porter's back (what bit rot or an attacker does)."""
    tmp = tmp_path / "rewrite.bin"
    tmp.write_bytes(data)
    open_store(zoo_root(zoo)).upload(key, tmp)


def test_publish_pull_list_verify_gc_round_trip(zoo, tmp_path):
    da = kills.make_output(tmp_path / "a", 0)
    db = kills.make_output(tmp_path / "b", 1)
    (tmp_path / "b" / "report").mkdir()
    (tmp_path / "b" / "report" / "report.md").write_text("# parity\n")
    first = publish(tmp_path / "a", "m", zoo)
    second = publish(tmp_path / "b", "m", zoo)
    assert (first.ref, second.ref) == ("m@1", "m@2") and second.weights_sha256 == db

    [latest] = list_entries(zoo)
    assert (latest["ref"], latest["weights_sha256"], latest["versions_published"]) == \
        ("m@2", db, 2)
    assert latest["source_sha256"] == f"{1:064d}" and latest["porter"] == "test"
    assert [e["ref"] for e in list_entries(zoo, all_versions=True)] == ["m@1", "m@2"]

    got_latest, got_first = pull("m", zoo), pull("m@1", zoo)
    for got, src in ((got_latest, tmp_path / "b"), (got_first, tmp_path / "a")):
        rels = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
        assert sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file()) \
            == rels
        for rel in rels:
            assert (got / rel).read_bytes() == (src / rel).read_bytes()
    assert sha256_file(got_first / "model.safetensors") == da
    assert pull("m", zoo) == got_latest  # cached, and re-hashed

    assert verify_entry("m", zoo)["sha256"] == db
    assert [(r["ref"], r["ok"]) for r in verify_all(zoo)] == [("m@1", True), ("m@2", True)]

    assert gc(zoo, grace_s=0) == []  # every blob is referenced by some version
    orphan = "f" * 64
    _rewrite(zoo, blob_key(orphan), b"left by a killed publish", tmp_path)
    assert gc(zoo) == []  # younger than the grace period: a publish may be in progress
    store = open_store(zoo_root(zoo))
    if str(zoo).startswith("s3://"):  # a multipart upload a killed publisher never finished
        bucket, _, prefix = str(zoo)[len("s3://"):].partition("/")
        store.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=f"{prefix}/{blob_key('e' * 64)}")
        assert gc(zoo, grace_s=0) == [blob_key(orphan), f"unfinished upload of {blob_key('e' * 64)}"]
    else:
        assert gc(zoo, grace_s=0) == [blob_key(orphan)]
    assert open_store(zoo_root(zoo)).read(blob_key(orphan)) is None
    assert all(r["ok"] for r in verify_all(zoo))


def test_republishing_the_same_output_stores_its_blobs_once(zoo, tmp_path):
    kills.make_output(tmp_path / "a", 0)
    for _ in range(3):
        publish(tmp_path / "a", "m", zoo)
    store = open_store(zoo_root(zoo))
    assert len([b for b in store.list("blobs/sha256") if not b.startswith(".")]) == 2
    assert [e["ref"] for e in list_entries(zoo, all_versions=True)] == ["m@1", "m@2", "m@3"]


def test_corrupt_blob_is_refused_on_every_pull(zoo, tmp_path):
    digest = kills.make_output(tmp_path / "a", 0)
    publish(tmp_path / "a", "m", zoo)
    cached = pull("m", zoo)
    weights = cached / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))  # the cached copy rots: the next pull fetches it again
    assert sha256_file(pull("m", zoo) / "model.safetensors") == digest

    _rewrite(zoo, blob_key(digest), bytes(data), tmp_path)  # now the zoo's blob is altered
    with pytest.raises(IntegrityError, match="corrupt in the zoo"):
        verify_entry("m", zoo)
    with pytest.raises(IntegrityError, match="corrupt in the zoo"):
        pull("m", zoo, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()  # nothing half-fetched is left
    [result] = verify_all(zoo)
    assert not result["ok"] and "corrupt" in result["error"]


def test_altered_version_manifest_is_refused(zoo, tmp_path):
    kills.make_output(tmp_path / "a", 0)
    kills.make_output(tmp_path / "b", 1)
    publish(tmp_path / "a", "m", zoo)
    publish(tmp_path / "b", "m", zoo)
    store = open_store(zoo_root(zoo))
    v1 = store.read(version_key("m", 1))
    _rewrite(zoo, version_key("m", 2), v1.replace(b'"version": 1', b'"version": 2'), tmp_path)
    with pytest.raises(IntegrityError, match="that latest records"):
        pull("m", zoo)
    with pytest.raises(ZooError, match="no version 7 of 'm'"):
        pull("m@7", zoo)
    with pytest.raises(ZooError, match="no zoo entry 'nothing'"):
        pull("nothing", zoo)


CONCURRENT = """
import sys
from porter.zoo.publish import publish
for _ in range(3):
    print(publish(sys.argv[1], "m", sys.argv[2]).version, flush=True)
"""


def test_concurrent_publishes_of_one_name_end_as_distinct_versions(zoo, tmp_path):
    digests = {kills.make_output(tmp_path / "a", 0), kills.make_output(tmp_path / "b", 1)}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(tmp_path / src), str(zoo)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for src in ("a", "b", "a")]
    versions = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
        versions += [int(v) for v in out.split()]
    assert sorted(versions) == list(range(1, 10))  # nine publishes, nine distinct versions
    results = verify_all(zoo)
    assert [r["ref"] for r in results] == [f"m@{v}" for v in range(1, 10)]
    assert all(r["ok"] and r["sha256"] in digests for r in results)
    [latest] = list_entries(zoo)
    assert latest["version"] == 9  # latest never moved backwards


def test_killed_publishes_leave_nothing_corrupt_or_half_visible(zoo, tmp_path):
    """The same loop as scripts/bench_zoo_kills.py (60 kills per backend in BENCHMARKS.md)."""
    summary = kills.kill_loop(zoo, tmp_path / "work", kills=6, seed=11)
    assert summary["corrupt_seen"] == 0 and summary["half_visible_seen"] == 0, summary
    assert summary["blobs_left_equal_referenced"], summary
    assert summary["after_gc"]["corrupt"] == summary["after_gc"]["half_visible"] == 0


def test_cli_push_pull_list_verify_gc(zoo, tmp_path, capsys):
    from porter.cli.main import main

    digest = kills.make_output(tmp_path / "a", 0)
    assert main(["zoo", "push", str(tmp_path / "a"), "--name", "m", "--zoo", str(zoo),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ref"] == "m@1"
    assert main(["zoo", "--zoo", str(zoo), "list", "--json"]) == 0
    assert [e["ref"] for e in json.loads(capsys.readouterr().out)] == ["m@1"]
    assert main(["zoo", "pull", "m@1", "--zoo", str(zoo)]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert sha256_file(folder / "model.safetensors") == digest
    assert main(["zoo", "verify", "m", "--zoo", str(zoo)]) == 0
    assert f"m@1: ok (sha256 {digest})" in capsys.readouterr().out
    assert main(["zoo", "gc", "--grace", "0", "--zoo", str(zoo)]) == 0
    assert "removed 0 " in capsys.readouterr().out
    data = bytearray((tmp_path / "a" / "model.safetensors").read_bytes())
    data[100] ^= 0xFF
    _rewrite(zoo, blob_key(digest), bytes(data), tmp_path)
    assert main(["zoo", "verify", "m", "--zoo", str(zoo)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("porter: error: m@1: model.safetensors blob hashes to") and \
        err.count("\n") == 1
    assert main(["zoo", "verify", "--zoo", str(zoo)]) == 1
    assert "m@1: FAILED" in capsys.readouterr().out


def _cli(argv: list[str], env: dict[str, str], prelude: str = "") -> subprocess.CompletedProcess:
    code = f"{prelude}\nimport sys\nfrom porter.cli.main import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env}, timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2 and proc.stderr.startswith("porter: error: ") and \
        proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr


def test_s3_errors_are_one_line(s3_endpoint, tmp_path):
    """Missing bucket, unreachable endpoint, no s3fs, a protocol without conditional writes."""
    kills.make_output(tmp_path / "a", 0)
    env = {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_MAX_ATTEMPTS": "1", "PORTER_CACHE": str(tmp_path / "cache")}
    push = ["zoo", "push", str(tmp_path / "a"), "--name", "m", "--zoo"]
    err = _one_line_error(_cli(push + ["s3://no-such-bucket/zoo"], env))
    assert "bucket 'no-such-bucket' does not exist" in err
    err = _one_line_error(_cli(["zoo", "pull", "m", "--zoo", "s3://no-such-bucket/zoo"], env))
    assert "bucket 'no-such-bucket' does not exist" in err
    dead = {**env, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}  # nothing listens on port 9
    assert "Could not connect to the endpoint" in _one_line_error(
        _cli(["zoo", "list", "--zoo", "s3://bucket/zoo"], dead))
    no_s3fs = "import sys; sys.modules['s3fs'] = None  # as if the s3 extra were not installed"
    assert "pip install 'porter[s3]'" in _one_line_error(
        _cli(["zoo", "list", "--zoo", "s3://bucket/zoo"], env, no_s3fs))
    assert "knows them only for s3" in _one_line_error(_cli(push + ["memory://zoo"], env))
