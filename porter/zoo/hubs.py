"""Fetching a catalog file from a model hub (ModelScope, Hugging Face) with the hubs' own clients.

Some models are published only on model hubs. A ``kind = "model-hub"`` source lists the hubs in
order of preference; each is tried with its official client (``modelscope``, the client the
Ascend seeds use, then ``huggingface_hub``) and the first that delivers wins. When none does
(no client installed, hub unreachable, file missing) the error is one line naming every hub and
why it failed. A file without a pinned digest in the catalog has its sha256 recorded beside it on
first fetch (trust on first use) and checked on every later use.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from porter.errors import ZooError

__all__ = ["fetch_from_hubs", "HUB_CLIENTS"]


def _modelscope(repo: str, file: str, into: Path) -> Path:
    try:
        from modelscope.hub.file_download import model_file_download
    except ImportError:
        raise ZooError("the modelscope client is not installed (pip install 'porter[hub]')") \
            from None
    return Path(model_file_download(model_id=repo, file_path=file, cache_dir=str(into)))


def _huggingface(repo: str, file: str, into: Path) -> Path:
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ZooError("the huggingface_hub client is not installed") from None
    return Path(hf_hub_download(repo_id=repo, filename=file, cache_dir=str(into),
                                etag_timeout=10))


#: hub name -> download(repo, file, into) -> local path
HUB_CLIENTS: dict[str, Callable[[str, str, Path], Path]] = {
    "modelscope": _modelscope,
    "huggingface": _huggingface,
}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def fetch_from_hubs(name: str, source: Mapping[str, Any], dest: Path,
                    progress: Callable[[str], None] = lambda _: None) -> Path:
    """Download ``source['hubs']`` entries in order into ``dest`` (a partial file, then renamed
    by the caller's digest check); ZooError naming every failure when none works."""
    hubs = source.get("hubs") or []
    if not hubs:
        raise ZooError(f"{name}: model-hub source lists no hubs")
    failures = []
    for hub in hubs:
        kind, repo, file = hub.get("hub"), hub.get("repo"), hub.get("file")
        client = HUB_CLIENTS.get(kind)
        if client is None or not repo or not file:
            failures.append(f"{kind} {repo}: unknown hub or incomplete entry")
            continue
        progress(f"download {file} from {kind} {repo}")
        with tempfile.TemporaryDirectory(prefix="porter-hub-") as tmp:
            try:
                got = client(repo, file, Path(tmp))
            except Exception as exc:  # a hub client's own error types; reported, next hub
                failures.append(f"{kind} {repo}: {_reason(exc)}")
                continue
            part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
            shutil.copyfile(got, part)
            return part
    raise ZooError(f"{name}: could not fetch {dest.name} from any hub ("
                   + "; ".join(failures) + ")")
