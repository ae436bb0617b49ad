"""ChildRuntime factories that try file I/O from inside the confined child (sandbox tests)."""

from __future__ import annotations

from typing import Any

import numpy as np


class _Probe:
    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload, self.info = payload, {}

    def __call__(self, inputs: dict) -> dict:
        """Try to read ``read`` and write ``write`` from inside the child; report what held."""
        import tempfile

        out = {}
        if self.payload.get("tmp"):  # the child's scratch folder (TMPDIR) is writable
            with open(f"{tempfile.gettempdir()}/ok", "wb") as fh:
                fh.write(b"ok")
            out["tmp"] = np.array(1)
        for key in ("read", "write"):
            path = self.payload.get(key)
            if not path:
                continue
            try:
                if key == "read":
                    with open(path, "rb") as fh:
                        fh.read()
                else:
                    with open(path, "wb") as fh:
                        fh.write(b"pwned")
                out[key] = np.array(1)
            except OSError:
                out[key] = np.array(0)
        return out


def probe(payload: dict[str, Any]) -> _Probe:
    """A runner that tries plain file I/O (as a framework bug or a missed op would)."""
    return _Probe(payload)


def paddle_save_load(payload: dict[str, Any]) -> Any:
    """Paddle's own file I/O (``paddle.save`` / ``paddle.load``, what a program's save/load ops
    do) from inside the confined child; raises where the sandbox stops it."""
    import paddle

    if payload.get("write"):
        paddle.save({"w": paddle.to_tensor([1.0])}, payload["write"])
    if payload.get("read"):
        paddle.load(payload["read"])
    return _Probe({})
