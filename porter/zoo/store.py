"""Where a zoo's bytes live: a local folder or any URL fsspec can open (``s3://bucket/prefix``).

A zoo needs only a few operations, and two of them must be atomic on the server, because the
zoo's consistency rests on them:

- ``create(key, data)``: write a key only if it does not exist (S3 ``If-None-Match: *``;
  locally a hard link of a finished temporary file, which fails if the name is taken);
- ``replace_if(key, data, tag)``: overwrite a key only if it still holds what was read
  (S3 ``If-Match: <ETag>``; locally compare-and-rename under ``flock`` on the folder).

Uploads appear whole (S3 objects do; local files are renamed into place). Credentials and
endpoints come from the usual places only: the AWS environment variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID`` ...), ``~/.aws``, and fsspec's own configuration (``FSSPEC_S3_*``,
``$FSSPEC_CONFIG_DIR``); porter has no credential file of its own.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from porter.errors import ZooError

__all__ = ["Store", "LocalStore", "FsspecStore", "open_store", "is_url"]

#: Protocols whose servers offer create-only and compare-and-swap writes that porter uses.
CONDITIONAL = ("s3", "s3a")


def is_url(root: str | Path) -> bool:
    """True for ``proto://...`` (a remote zoo), False for a plain local path."""
    return isinstance(root, str) and "://" in root and not root.startswith("file://")


class Store:
    """A zoo's storage: keys are '/'-separated paths below the zoo's root."""

    url: str

    def read(self, key: str) -> bytes | None:
        """The bytes at ``key``, or None when there is none."""
        raise NotImplementedError

    def digest(self, key: str) -> str | None:
        """The sha256 of the bytes at ``key`` (streamed), or None when there is none."""
        raise NotImplementedError

    def tag(self, key: str) -> str | None:
        """An opaque token that changes whenever ``key`` changes; None when it is missing."""
        raise NotImplementedError

    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist yet; False if it does (nothing written)."""
        raise NotImplementedError

    def replace_if(self, key: str, data: bytes, tag: str | None) -> bool:
        """Write ``key`` only if its tag is still ``tag`` (None: still missing); else False."""
        raise NotImplementedError

    def upload(self, key: str, local: Path) -> None:
        """Copy a local file to ``key``; readers see the old object or the whole new one."""
        raise NotImplementedError

    def download(self, key: str, local: Path) -> None:
        """Copy ``key`` into the local file ``local``; ZooError if it is missing."""
        raise NotImplementedError

    def list(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (files and folders), sorted; [] if there is none."""
        raise NotImplementedError

    def age_s(self, key: str) -> float:
        """Seconds since ``key`` was last written."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def clear_stale_uploads(self, grace_s: float) -> list[str]:
        """Abort uploads that a killed writer left unfinished (S3 multipart uploads: invisible,
        but stored and billed) when older than ``grace_s``; returns their keys."""
        return []

    def check(self, write: bool = False) -> None:
        """Fail with one clear ZooError if the zoo cannot be reached (or written)."""
        raise NotImplementedError

    def where(self, key: str) -> str:
        """A human-readable location of ``key`` for messages."""
        return f"{self.url.rstrip('/')}/{key}"


class LocalStore(Store):
    """A zoo in a local folder (also a shared POSIX mount that honours ``flock`` and links)."""

    TMP = ".porter-tmp-"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def digest(self, key: str) -> str | None:
        from porter.source import sha256_file

        try:
            return sha256_file(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def tag(self, key: str) -> str | None:
        data = self.read(key)
        return None if data is None else hashlib.sha256(data).hexdigest()

    def _temp(self, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}{self.TMP}", dir=dest.parent)
        os.close(fd)
        return Path(tmp)

    def _finish(self, tmp: Path) -> None:
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())

    def create(self, key: str, data: bytes) -> bool:
        dest = self._path(key)
        tmp = self._temp(dest)
        try:
            tmp.write_bytes(data)
            self._finish(tmp)
            try:
                os.link(tmp, dest)  # atomic and create-only: the name appears with all its bytes
            except FileExistsError:
                return False
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def replace_if(self, key: str, data: bytes, tag: str | None) -> bool:
        from porter.zoo.atomic import folder_lock

        dest = self._path(key)
        tmp = self._temp(dest)
        try:
            tmp.write_bytes(data)
            self._finish(tmp)
            with folder_lock(dest.parent):
                if self.tag(key) != tag:
                    return False
                os.replace(tmp, dest)
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def upload(self, key: str, local: Path) -> None:
        import shutil

        dest = self._path(key)
        tmp = self._temp(dest)
        try:
            shutil.copyfile(local, tmp)
            self._finish(tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def download(self, key: str, local: Path) -> None:
        import shutil

        try:
            shutil.copyfile(self._path(key), local)
        except FileNotFoundError as exc:
            raise ZooError(f"{self.where(key)}: missing from the zoo") from exc

    def list(self, prefix: str) -> list[str]:
        try:
            return sorted(p.name for p in self._path(prefix).iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def age_s(self, key: str) -> float:
        try:
            return time.time() - self._path(key).stat().st_mtime
        except FileNotFoundError:
            return 0.0  # gone meanwhile (another gc, or a publish renamed it into place)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def check(self, write: bool = False) -> None:
        nearest = self.root
        while not nearest.exists() and nearest != nearest.parent:
            nearest = nearest.parent  # the folder that will hold the zoo once it is created
        if not nearest.is_dir():
            raise ZooError(f"zoo {self.root}: {nearest} is a file, not a folder")
        if write and not os.access(nearest, os.W_OK | os.X_OK):
            raise ZooError(f"zoo {self.root}: {nearest} is not writable")


def _precondition_failed(exc: BaseException) -> bool:
    """True when an S3 write was refused because its If-Match / If-None-Match did not hold."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                return True
        if "pre-condition" in str(seen) or "PreconditionFailed" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class FsspecStore(Store):
    """A zoo at a URL, through the fsspec filesystem for its protocol (s3fs for ``s3://``)."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.url = url.rstrip("/")
        self.protocol = url.split("://", 1)[0]
        options: dict[str, Any] = {}
        if self.protocol in CONDITIONAL:
            # other processes publish too: never answer a listing from this process's cache
            options = {"use_listings_cache": False}
            if os.environ.get("AWS_ENDPOINT_URL"):  # botocore reads it too; named here, it
                options["endpoint_url"] = os.environ["AWS_ENDPOINT_URL"]  # keys fsspec's cache
        try:
            self.fs, self.base = fsspec.core.url_to_fs(self.url, **options)
        except ImportError as exc:
            extra = " (pip install 'porter[s3]')" if self.protocol in CONDITIONAL else ""
            raise ZooError(f"zoo {url}: the {self.protocol}:// backend needs a package that is "
                           f"not installed: {exc}{extra}") from exc
        except ValueError as exc:
            raise ZooError(f"zoo {url}: fsspec knows no protocol {self.protocol!r}") from exc
        self.base = self.base.rstrip("/")

    def _path(self, key: str) -> str:
        return f"{self.base}/{key}"

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (FileNotFoundError, FileExistsError):
            raise
        except PermissionError as exc:
            raise ZooError(f"zoo {self.url}: access denied while {what} ({exc})") from exc
        except Exception as exc:  # botocore/aiohttp errors are not OSErrors; one line each
            if _precondition_failed(exc):
                raise
            raise ZooError(f"zoo {self.url}: {what} failed: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc

    def read(self, key: str) -> bytes | None:
        try:
            return self._call(f"reading {key}", self.fs.cat_file, self._path(key))
        except FileNotFoundError:
            return None

    def digest(self, key: str) -> str | None:
        h = hashlib.sha256()
        try:
            with self._call(f"reading {key}", self.fs.open, self._path(key), "rb") as fh:
                while chunk := fh.read(1 << 22):
                    h.update(chunk)
        except FileNotFoundError:
            return None
        return h.hexdigest()

    def tag(self, key: str) -> str | None:
        try:
            info = self._call(f"reading {key}", self.fs.info, self._path(key))
        except FileNotFoundError:
            return None
        return str(info.get("ETag") or info.get("etag") or info.get("mtime") or info)

    def _need_conditional(self) -> None:
        if self.protocol not in CONDITIONAL:
            raise ZooError(f"zoo {self.url}: porter needs create-only and compare-and-swap "
                           f"writes to publish, and knows them only for "
                           f"{', '.join(CONDITIONAL)} and local folders, not {self.protocol}://")

    def create(self, key: str, data: bytes) -> bool:
        # If-None-Match straight to PutObject (botocore >= 1.35.20): s3fs passes it through
        return self._put_if(key, data, FileExistsError, IfNoneMatch="*")

    def replace_if(self, key: str, data: bytes, tag: str | None) -> bool:
        if tag is None:
            return self.create(key, data)
        return self._put_if(key, data, FileNotFoundError, IfMatch=tag)

    def _put_if(self, key: str, data: bytes, lost: type[Exception], **condition: str) -> bool:
        """PutObject under an S3 precondition; False when another writer got there first."""
        self._need_conditional()
        try:
            self._call(f"writing {key}", self.fs.pipe_file, self._path(key), data, **condition)
        except lost:
            return False
        except Exception as exc:
            if _precondition_failed(exc):
                return False
            raise
        return True

    def upload(self, key: str, local: Path) -> None:
        self._call(f"uploading {key}", self.fs.put_file, str(local), self._path(key))

    def download(self, key: str, local: Path) -> None:
        try:
            self._call(f"downloading {key}", self.fs.get_file, self._path(key), str(local))
        except FileNotFoundError as exc:
            raise ZooError(f"{self.where(key)}: missing from the zoo") from exc

    def list(self, prefix: str) -> list[str]:
        try:
            names = self._call(f"listing {prefix}", self.fs.ls, self._path(prefix), detail=False)
        except FileNotFoundError:
            return []
        top = self._path(prefix).rstrip("/")
        return sorted({n.rstrip("/").rsplit("/", 1)[-1] for n in names
                       if n.rstrip("/") != top})

    def age_s(self, key: str) -> float:
        info = self._call(f"reading {key}", self.fs.info, self._path(key))
        stamp = info.get("LastModified") or info.get("mtime") or info.get("created")
        if hasattr(stamp, "timestamp"):
            stamp = stamp.timestamp()
        return time.time() - float(stamp) if stamp is not None else float("inf")

    def delete(self, key: str) -> None:
        try:
            self._call(f"deleting {key}", self.fs.rm_file, self._path(key))
        except FileNotFoundError:
            pass

    def clear_stale_uploads(self, grace_s: float) -> list[str]:
        if self.protocol not in CONDITIONAL:
            return []
        bucket, _, prefix = self.base.partition("/")
        found = self._call("listing unfinished uploads", self.fs.call_s3, "list_multipart_uploads",
                           Bucket=bucket, Prefix=f"{prefix}/" if prefix else "")
        cleared = []
        for up in found.get("Uploads", []):
            started = up.get("Initiated")
            age = time.time() - started.timestamp() if hasattr(started, "timestamp") else 0.0
            if age >= grace_s:
                self._call("aborting an unfinished upload", self.fs.call_s3,
                           "abort_multipart_upload", Bucket=bucket, Key=up["Key"],
                           UploadId=up["UploadId"])
                cleared.append(f"unfinished upload of {up['Key'][len(prefix) + 1:]}")
        return cleared

    def check(self, write: bool = False) -> None:
        if write:
            self._need_conditional()
        if self.protocol not in CONDITIONAL:
            return
        bucket = self.base.split("/", 1)[0]
        try:
            self._call("connecting", self.fs.ls, bucket, detail=False)
        except FileNotFoundError as exc:
            raise ZooError(f"zoo {self.url}: bucket {bucket!r} does not exist (create it first)"
                           ) from exc


def open_store(root: str | Path) -> Store:
    """The store for a zoo location: a local path, ``file://`` URL or any fsspec URL."""
    if isinstance(root, str) and root.startswith("file://"):
        return LocalStore(root[len("file://"):])
    if is_url(root):
        return FsspecStore(str(root))
    return LocalStore(root)
