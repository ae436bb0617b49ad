"""The upstream PyTorch network as the source runtime of a PyTorch-native model.

For a checkpoint there is no foreign runtime: the reference is the network its authors wrote.
:class:`UpstreamRunner` imports a user-given ``file.py:callable`` (a class or a builder), loads
the source's tensors into it strictly and runs it, so parity compares porter's clean module
with the upstream code itself. porter never ships that code; the user (or a test) names it.

Upstream files often import packages for preprocessing or training only (``torchvision``,
``cv2``, ``timm``'s layers) that may not be installed. ``stand_ins`` names modules that, when
missing, are replaced by empty modules with the few harmless attributes an inference forward
needs (:data:`STAND_INS`); a name the forward really uses then fails loudly, never silently.
Importing such a file may seed the global RNGs; the runner restores them afterwards.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from porter.errors import PorterError

__all__ = ["UpstreamRunner", "import_upstream", "STAND_INS"]


def _identity_module(*_: Any, **__: Any) -> torch.nn.Module:
    return torch.nn.Identity()


def _to_2tuple(x: Any) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x, x)


def _trunc_normal_(t: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                   b: float = 2.0) -> torch.Tensor:
    return torch.nn.init.trunc_normal_(t, mean, std, a, b)


class _Unavailable:
    """Any attribute of a stand-in module. Building one (module-level ``transforms.Compose``)
    gives another placeholder; using one as a value (iterating, testing it, doing arithmetic,
    passing it to torch) fails naming the missing package."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, item: str) -> Any:
        if item.startswith("__"):
            raise AttributeError(item)
        return _Unavailable(f"{self._name}.{item}")

    def __call__(self, *_: Any, **__: Any) -> Any:
        return _Unavailable(f"{self._name}()")

    def _fail(self, *_: Any, **__: Any) -> Any:
        raise PorterError(f"upstream code used {self._name}, a stand-in here (the package is "
                          "not installed)")

    __bool__ = __iter__ = __len__ = __add__ = __mul__ = __array__ = __float__ = _fail


#: module name -> attributes of its stand-in (DropPath is the identity at inference).
STAND_INS: dict[str, dict[str, Any]] = {
    "timm": {}, "timm.layers": {"DropPath": _identity_module, "to_2tuple": _to_2tuple,
                                "trunc_normal_": _trunc_normal_},
    "torchvision": {}, "torchvision.transforms": {},
    "cv2": {},
}


def _module_getattr(name: str) -> Callable[[str], Any]:
    def getattr_(item: str) -> Any:
        if item.startswith("__"):
            raise AttributeError(item)
        return _Unavailable(f"{name}.{item}")

    return getattr_


def _install_stand_ins(names: Sequence[str]) -> list[str]:
    installed = []
    for name in names:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
            continue
        except ImportError:
            pass
        mod = types.ModuleType(name)
        mod.__path__ = []  # a package with no files: its submodules are stand-ins too
        mod.__dict__.update(STAND_INS.get(name, {}))
        mod.__getattr__ = _module_getattr(name)  # type: ignore[method-assign]
        sys.modules[name] = mod
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, mod)
        installed.append(name)
    return installed


def import_upstream(spec: str, stand_ins: Sequence[str] = tuple(STAND_INS)) -> Callable:
    """Import ``file.py:name`` (or ``package.module:name``) and return ``name``."""
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise PorterError(f"upstream {spec!r}: expected FILE.py:NAME or module:NAME")
    rng = torch.random.get_rng_state()
    np_rng = np.random.get_state()
    try:
        _install_stand_ins(stand_ins)
        if target.endswith(".py"):
            path = Path(target).expanduser().resolve()
            if not path.is_file():
                raise PorterError(f"upstream {spec!r}: {path} not found")
            mod_name = f"porter_upstream_{path.stem}_{abs(hash(path)) % 10**8}"
            module = sys.modules.get(mod_name)
            if module is None:
                spec_ = importlib.util.spec_from_file_location(mod_name, path)
                if spec_ is None or spec_.loader is None:
                    raise PorterError(f"upstream {spec!r}: cannot import {path}")
                module = importlib.util.module_from_spec(spec_)
                sys.modules[mod_name] = module
                try:
                    spec_.loader.exec_module(module)
                except ImportError as exc:
                    del sys.modules[mod_name]
                    raise PorterError(f"upstream {path.name} needs {exc.name or exc}, which is "
                                      "not installed") from exc
        else:
            module = importlib.import_module(target)
    finally:
        torch.random.set_rng_state(rng)
        np.random.set_state(np_rng)
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise PorterError(f"upstream {spec!r}: no {attr} in {target}") from exc


def _build(factory: Callable, kwargs: Mapping[str, Any]) -> torch.nn.Module:
    """Call ``factory`` with the kwargs it accepts (a fixed upstream class takes none)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        args = dict(kwargs)
    else:
        args = {k: v for k, v in kwargs.items() if k in params}
    rng = torch.random.get_rng_state()
    try:
        return factory(**args)
    finally:
        torch.random.set_rng_state(rng)


class UpstreamRunner:
    """Runner over the upstream module with the source's tensors loaded strictly."""

    def __init__(self, spec: str | Callable, tensors: Mapping[str, Any],
                 input_names: Sequence[str], output_names: Sequence[str], *,
                 kwargs: Mapping[str, Any] | None = None) -> None:
        factory = import_upstream(spec) if isinstance(spec, str) else spec
        self.spec = spec if isinstance(spec, str) else getattr(spec, "__qualname__", repr(spec))
        module = _build(factory, kwargs or {})
        state = {}
        for name, ref in tensors.items():
            arr = ref.numpy() if hasattr(ref, "numpy") else np.asarray(ref)
            if arr.dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
                arr = arr.astype(np.float32)  # exact; load_state_dict casts to the module's
            state[name] = torch.from_numpy(np.array(arr, copy=True))
        try:
            result = module.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shape clashes: torch lists them one per line
            clashes = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()]
            raise PorterError(f"upstream {self.spec}: the source does not load strictly: "
                              f"{'; '.join(clashes[:3]) or exc}"
                              f"{f' (and {len(clashes) - 3} more)' if len(clashes) > 3 else ''}"
                              ) from exc
        if result.missing_keys or result.unexpected_keys:
            raise PorterError(f"upstream {self.spec}: the source does not load strictly "
                              f"(missing {result.missing_keys[:5]}, unexpected "
                              f"{result.unexpected_keys[:5]})")
        self.module = module.eval()
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.name = "torch-upstream"
        self.info = {"runtime": "torch-upstream", "upstream": str(self.spec),
                     "torch": torch.__version__}

    @torch.inference_mode()
    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in self.input_names]
        out = self.module(*args)
        if isinstance(out, torch.Tensor):
            out = (out,)
        elif isinstance(out, Mapping):  # named outputs, in the order the dict gives them
            out = tuple(out.values())
        return {n: o.detach().float().cpu().numpy() for n, o in zip(self.output_names, out)}
