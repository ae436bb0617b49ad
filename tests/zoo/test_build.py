"""`porter zoo build`: a fixture catalog built in-process and on a local Ray cluster.

The fixture catalog (scripts/build_zoo_fixture_catalog.py) holds small ONNX models served from
a local wheel through pip, like the project catalog's sources; one entry's converter (a plugin
named by the catalog) dies of SIGSEGV and one has a tolerance below float32 rounding. Nothing
here touches the network.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from porter.cli.main import main
from porter.errors import ZooError
from porter.zoo.build import EntryPlan, build_catalog, plan_entries, published_build, task_options

ROOT = Path(__file__).resolve().parents[2]
SHARED_MODELS = ROOT.parent / "shared" / "models"


def _fixtures():
    spec = importlib.util.spec_from_file_location(
        "build_zoo_fixture_catalog", ROOT / "scripts" / "build_zoo_fixture_catalog.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def fixture_catalog(tmp_path, monkeypatch):
    monkeypatch.setenv("PORTER_CACHE", str(tmp_path / "cache"))
    catalog = _fixtures().make_catalog(tmp_path / "fixture", models=2)
    return catalog, ["--no-index", "--find-links", str(catalog.parent / "wheels")], \
        str(tmp_path / "zoo")


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


# --- plan and options: fast, no conversion -------------------------------------------------

def test_plan_reads_build_table_and_refuses_bad_fields(tmp_path):
    (tmp_path / "p.py").write_text("")
    cat = {"a": {"file": "a.onnx", "build": {"verify": "npu", "tolerance": 1e-3,
                                             "plugins": ["p.py"], "max_retries": 2,
                                             "runtime_env": {"pip": ["onnx==1.17.0"]}}},
           "b": {"file": "b.onnx", "graph": "modnet"}}
    a, b = plan_entries(cat, catalog_dir=tmp_path)
    assert (a.verify, a.tolerance, a.max_retries) == ("npu", 1e-3, 2)
    assert a.plugins == [str((tmp_path / "p.py").resolve())]
    assert b.graph == "modnet" and b.verify == "cpu"
    assert [p.name for p in plan_entries(cat, only=["b"])] == ["b"]
    with pytest.raises(ZooError, match="does not have: c"):
        plan_entries(cat, only=["c"])
    for bad, match in (({"verify": "gpu"}, "build.verify"), ({"tolerance": 0}, "tolerance"),
                       ({"toleranse": 1}, "unknown build field"),
                       ({"timeout_s": -1}, "timeout_s"), ({"num_cpus": "2"}, "num_cpus"),
                       ({"plugins": ["nope.py"]}, "plugin nope.py not found")):
        with pytest.raises(ZooError, match=match):
            plan_entries({"x": {"build": bad}}, catalog_dir=tmp_path)


def test_task_options_npu_resource_runtime_env_and_retries():
    plan = EntryPlan("a", verify="npu", max_retries=2,
                     runtime_env={"pip": ["onnx==1.17.0"], "env_vars": {"X": "1"}})
    opts = task_options(plan, {"CPU": 8, "NPU": 8})
    assert opts["resources"] == {"NPU": 1}
    assert opts["runtime_env"] == {"pip": ["onnx==1.17.0"], "env_vars": {"X": "1"}}
    assert opts["max_retries"] == 2 and OSError in opts["retry_exceptions"]
    assert not any(issubclass(e, ZooError) for e in opts["retry_exceptions"])
    plain = task_options(EntryPlan("b"), {"CPU": 8})
    assert "resources" not in plain and "runtime_env" not in plain
    with pytest.raises(ZooError, match="no node of the Ray cluster has the NPU resource"):
        task_options(plan, {"CPU": 8})  # would wait forever; refused up front
    with pytest.raises(ZooError, match="asks for 4 CPUs; the Ray cluster has 2 in all"):
        task_options(EntryPlan("c", num_cpus=4), {"CPU": 2})


def test_in_process_refuses_pinned_runtime_env(fixture_catalog):
    catalog, pip_args, zoo = fixture_catalog
    text = catalog.read_text().replace('[tiny_0.source]',
                                       '[tiny_0.build]\nruntime_env = { pip = ["onnx==1.17.0"] }'
                                       '\n[tiny_0.source]')
    catalog.write_text(text)
    (r,) = build_catalog(catalog, zoo=zoo, only=["tiny_0"], pip_args=pip_args)
    assert r.status == "failed" and "needs its own runtime_env (pip); build it with --ray" \
        in r.error
    assert published_build("tiny_0", zoo) is None


# --- in-process: publish, skip, --changed ---------------------------------------------------

def test_in_process_publishes_then_skips(fixture_catalog, capsys):
    catalog, pip_args, zoo = fixture_catalog
    argv = ["zoo", "build", str(catalog), "--zoo", zoo, "--find-links", pip_args[-1], "--json",
            "--only", "tiny_0", "tight"]
    assert main(argv) == 1  # `tight` fails parity
    first = {e["name"]: e for e in json.loads(capsys.readouterr().out)["entries"]}
    assert first["tiny_0"]["status"] == "published"
    assert 0 < first["tiny_0"]["parity"] < 1e-5
    assert first["tight"]["status"] == "failed"
    assert first["tight"]["error"].startswith("parity failed: worst max|Δ|")
    assert "> 1e-12" in first["tight"]["error"]
    have = published_build("tiny_0", zoo)
    assert have["source_sha256"] == first["tiny_0"]["source_sha256"]
    assert main(["zoo", "verify", "tiny_0", "--zoo", zoo]) == 0
    capsys.readouterr()

    assert main(argv[:-1]) == 0  # --only tiny_0: already published
    again = json.loads(capsys.readouterr().out)
    assert [e["status"] for e in again["entries"]] == ["skipped"]
    assert again["entries"][0]["parity"] == first["tiny_0"]["parity"]  # the zoo's figures

    # a published build by other library versions is rebuilt, unless --changed (source only)
    # (versions are immutable: publish the same output, as another onnxruntime made it, as
    # the next version)
    from porter.zoo.pull import pull

    other = Path(pull("tiny_0", zoo, str(Path(zoo).parent / "other")))
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["versions"]["onnxruntime"] = "0.0.1"
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert main(["zoo", "push", str(other), "--zoo", zoo]) == 0
    capsys.readouterr()
    assert main(argv[:-1] + ["--changed"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"][0]["status"] == "skipped"
    assert main(argv[:-1]) == 0
    assert json.loads(capsys.readouterr().out)["entries"][0]["status"] == "published"


def test_prefetch_fills_the_cache_only_while_the_server_starts(fixture_catalog, tmp_path):
    """On a cold node the driver fetches package sources while the forkserver imports; once
    the server is up (its start thread ended) it leaves the fetching to the entries."""
    import threading

    from porter.zoo.build import _prefetch
    from porter.zoo.catalog import cached_path, load_catalog

    catalog_path, pip_args, _ = fixture_catalog
    catalog = load_catalog(catalog_path)
    plans = plan_entries(catalog, catalog_dir=catalog_path.parent)
    wheels = [p.name for p in plans
              if catalog[p.name].get("source", {}).get("kind") == "pypi-wheel"]
    assert len(wheels) >= 2
    done = threading.Thread(target=lambda: None)
    done.start()
    done.join()
    _prefetch(plans, catalog, pip_args, done)  # the server is already up: nothing fetched
    assert all(cached_path(n, catalog) is None for n in wheels)
    release = threading.Event()
    starting = threading.Thread(target=release.wait)
    starting.start()
    try:
        _prefetch(plans, catalog, pip_args, starting)
    finally:
        release.set()
        starting.join()
    assert all(cached_path(n, catalog) is not None for n in wheels)  # fetched, digest-checked


# --- on a local Ray cluster ----------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_cluster():
    """A local Ray cluster of 2 CPUs and one (logical) NPU, started here, stopped after."""
    ray = pytest.importorskip("ray")
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # workers inherit it: a hub fetch fails, offline, at once
    ray.init(num_cpus=2, resources={"NPU": 1}, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield ray
    ray.shutdown()
    from porter.zoo.node_server import stop_node_server

    stop_node_server()  # the workers' shared forkserver outlives them until it idles out
    if old is None:
        os.environ.pop("HF_HUB_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = old


@pytest.mark.slow
def test_ray_build_isolates_crash_and_parity_failure_then_skips(ray_cluster, fixture_catalog,
                                                                capsys):
    catalog, pip_args, zoo = fixture_catalog
    results = {r.name: r for r in build_catalog(catalog, zoo=zoo, ray="auto",
                                                pip_args=pip_args)}
    failed = {n: r.error for n, r in results.items() if r.status == "failed"}
    assert set(failed) == {"crash", "tight"}, failed
    assert failed["crash"].startswith("worker process crashed while building crash")
    assert failed["tight"].startswith("parity failed: worst max|Δ|")
    published = [r for r in results.values() if r.status == "published"]
    assert {r.name for r in published} == {"tiny_0", "tiny_1", "tiny_npu"}
    assert len({r.worker_pid for r in published}) == len(published)  # one process each
    assert os.getpid() not in {r.worker_pid for r in published}
    assert results["tiny_npu"].audit.startswith("audit: ")  # ran where the NPU resource is
    assert results["tiny_0"].audit is None

    import porter

    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    for r in published:
        assert main(["zoo", "verify", r.name, "--zoo", zoo]) == 0
        module = porter.load(r.name, zoo=zoo, trust_code=True)
        import torch

        with torch.no_grad():
            got = module(torch.from_numpy(x)).numpy()
        src = Path(os.environ["PORTER_CACHE"]) / "models" / r.name / f"{r.name}.onnx"
        np.testing.assert_allclose(got, _ort(src, x), atol=1e-5)
    capsys.readouterr()

    code = main(["zoo", "build", str(catalog), "--ray", "auto", "--zoo", zoo, "--json",
                 "--find-links", pip_args[-1]])
    assert code == 1
    out = capsys.readouterr().out
    second = {e["name"]: e for e in json.loads(out)["entries"]}  # stdout holds only the JSON
    assert {n for n, e in second.items() if e["status"] == "skipped"} == \
        {r.name for r in published}
    assert {n for n, e in second.items() if e["status"] == "failed"} == {"crash", "tight"}
    assert second["tiny_npu"]["audit"] == results["tiny_npu"].audit


@pytest.mark.slow
def test_ray_retries_transient_faults_only(ray_cluster, tmp_path, monkeypatch):
    """A plugin whose first import hits an OSError is retried in a fresh process and published;
    one raising a PorterError is not retried although its entry allows 2 retries; one that
    hangs is stopped at its timeout_s, in the worker."""
    monkeypatch.setenv("PORTER_CACHE", str(tmp_path / "cache"))
    catalog = _fixtures().make_retry_catalog(tmp_path / "retry")
    results = {r.name: r for r in build_catalog(
        catalog, zoo=tmp_path / "zoo", ray="auto",
        pip_args=["--no-index", "--find-links", str(catalog.parent / "wheels")])}
    assert (catalog.parent / "flaky.attempts").read_text() == "2"
    assert results["flaky"].status == "published", results["flaky"].error
    assert (catalog.parent / "refusing.attempts").read_text() == "1"
    assert results["refusing"].status == "failed"
    assert results["refusing"].error == "refusing fixture: nothing maps (deterministic)"
    assert results["hanging"].status == "failed"
    assert results["hanging"].error == "took longer than its timeout_s of 3 s; stopped"
    assert 2.5 < results["hanging"].time_s < 60  # stopped at 3 s, not after its sleep


@pytest.mark.slow
def test_ray_builds_project_catalog_offline(ray_cluster, tmp_path, monkeypatch, capsys):
    """The project catalog with --ray auto: MODNet from the shared copy placed in the cache
    (what a team's pre-seeded cache holds); BEN2's hub sources need the network, which these
    tests never use: they fail with one line each, promptly."""
    modnet = SHARED_MODELS / "modnet_photographic_portrait_matting.onnx"
    if not modnet.is_file():
        pytest.skip(f"real model not available ({SHARED_MODELS} is missing; CI has it)")
    cache = tmp_path / "cache"
    monkeypatch.setenv("PORTER_CACHE", str(cache))
    seeded = cache / "models" / "modnet_photographic" / modnet.name
    seeded.parent.mkdir(parents=True)
    seeded.symlink_to(modnet)
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    zoo = tmp_path / "zoo"
    code = main(["zoo", "build", str(ROOT / "model_zoo" / "catalog.toml"), "--ray", "auto",
                 "--zoo", str(zoo), "--json", "--find-links", str(empty)])
    out = json.loads(capsys.readouterr().out)
    entries = {e["name"]: e for e in out["entries"]}
    assert code == 1
    assert entries["modnet_photographic"]["status"] == "published", entries
    assert entries["modnet_photographic"]["parity"] < 1e-3
    assert main(["zoo", "verify", "modnet_photographic", "--zoo", str(zoo)]) == 0
    for name in ("ben2_base", "ben2_base_safetensors"):
        assert entries[name]["status"] == "failed"
        assert "could not fetch" in entries[name]["error"]
        assert "\n" not in entries[name]["error"]


def test_hard_killed_entry_reports_the_time_it_held_its_worker(monkeypatch):
    """A child stuck where its own deadline cannot stop it is killed by run_isolated after
    timeout_s plus the grace period (tests/zoo/test_isolate.py runs that for real); the
    summary then gives the time the entry really took, not its timeout_s."""
    import time

    import porter.zoo.build as build
    from porter.zoo.isolate import ChildTimedOut

    def stuck(*args, timeout_s=None, **kwargs):
        time.sleep(0.3)
        raise ChildTimedOut("still running 0.3 s after it started; killed")

    monkeypatch.setattr(build, "run_isolated", stuck)
    plan = EntryPlan("stuck", timeout_s=0.1, max_retries=0)
    result = build._entry_task(plan.__dict__, {}, {}, isolated=True)
    assert result["status"] == "failed"
    assert result["error"] == ("took longer than its timeout_s of 0.1 s; "
                               "still running 0.3 s after it started; killed")
    assert result["time_s"] >= 0.3
