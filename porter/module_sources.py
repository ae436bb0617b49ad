"""Sources that already are torch modules: a porter output folder, a published zoo entry, or a
Hugging Face ``transformers`` folder (``config.json`` + ``model.safetensors``, as
``save_pretrained`` writes it). Output kinds that start from a module (``--to onnx``) take
these as SRC; nothing needs porting, the module is what gets exported and verified.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from porter.errors import FormatError, PorterError

__all__ = ["ModuleSource", "is_hf_folder", "open_module_source"]


@dataclass
class ModuleSource:
    """A module with named inputs/outputs, parity cases, and the manifest's source entry."""

    module: torch.nn.Module
    input_names: list[str]
    output_names: list[str]
    cases: list[Any]
    source: dict[str, Any]
    graph: dict[str, Any]
    name: str
    meta: dict[str, Any] = field(default_factory=dict)


def _cases(name_shapes: list[tuple[str, tuple[int, ...]]]) -> list[Any]:
    from porter.verification.parity import Case

    cases = []
    for i, (label, shapes) in enumerate(name_shapes):
        rng = np.random.default_rng(i)
        cases.append(Case(label, {k: rng.uniform(-1, 1, size=s).astype(np.float32)
                                  for k, s in shapes.items()}, i))
    return cases


def _shape_overrides(shapes: list[str], input_names: list[str]) -> list[dict[str, tuple]]:
    from porter.generic import parse_shape

    out = []
    for text in shapes:
        name, dims = parse_shape(text)
        out.append({name or input_names[0]: tuple(dims)})
    return out


def _porter_output(folder: Path, shapes: list[str], trust_code: bool = False) -> ModuleSource:
    from porter.zoo.load import load_output, read_manifest

    manifest = read_manifest(folder)
    module = load_output(folder, trust_code=trust_code)
    io = manifest.get("io", {})
    ins, outs = list(io.get("inputs", [])), list(io.get("outputs", []))
    if shapes:
        sets = _shape_overrides(shapes, ins)
    else:
        sets = [{k: tuple(v) for k, v in c["shapes"].items()}
                for c in (manifest.get("parity") or {}).get("cases", [])
                if not str(c.get("name", "")).startswith("image:")]
    if not sets:
        raise PorterError(f"{folder}: the manifest records no parity shapes; give --shape")
    labels = ["x".join(map(str, next(iter(s.values())))) for s in sets]
    return ModuleSource(module, ins, outs, _cases(list(zip(labels, sets))),
                        {"path": str(folder), "format": "porter-output",
                         "sha256": manifest.get("weights", {}).get("sha256"),
                         "from": manifest.get("source", {})},
                        manifest.get("graph", {}), manifest.get("name") or folder.name)


def is_hf_folder(folder: Path) -> bool:
    """A ``save_pretrained`` folder (config.json + model.safetensors), not a porter output."""
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file() \
        and not (folder / "manifest.json").is_file()


def _hf_folder(folder: Path, shapes: list[str]) -> ModuleSource:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a hub for a local folder
    try:
        import transformers
    except ImportError as exc:
        raise PorterError("a Hugging Face folder needs transformers (pip install 'porter[hf]')") \
            from exc
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise FormatError(f"{folder / 'config.json'}: malformed JSON ({exc})") from exc
    archs = config.get("architectures") or []
    cls = getattr(transformers, archs[0], None) if archs else None
    if cls is None or not isinstance(cls, type) or not issubclass(cls, transformers.PreTrainedModel):
        raise FormatError(f"{folder}: config.json names no transformers model class "
                          f"(architectures={archs!r})")
    try:  # safetensors only, the library's own class: no code from the folder runs
        module = cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                     trust_remote_code=False).eval()
    except (OSError, ValueError, RuntimeError) as exc:
        raise FormatError(f"{folder}: transformers cannot load it: "
                          f"{str(exc).splitlines()[0]}") from exc
    inp = getattr(module, "main_input_name", "pixel_values")
    if shapes:
        sets = _shape_overrides(shapes, [inp])
    else:
        cfg = module.config
        size = getattr(cfg, "image_size", None) or getattr(
            getattr(cfg, "backbone_config", None), "image_size", None) or 224
        size = size[0] if isinstance(size, (list, tuple)) else size
        chans = getattr(cfg, "num_channels", None) or getattr(
            getattr(cfg, "backbone_config", None), "num_channels", 3)
        sets = [{inp: (1, chans, size, size)}]
    cases = _cases([("x".join(map(str, s[inp])), s) for s in sets])
    with torch.no_grad():
        out = module(**{inp: torch.from_numpy(cases[0].inputs[inp])})
    outs = [k for k, v in out.items() if isinstance(v, torch.Tensor)]
    module = _KeywordCall(module, inp, outs)
    from porter.source import sha256_file

    return ModuleSource(module, [inp], outs, cases,
                        {"path": str(folder), "format": "transformers",
                         "sha256": sha256_file(folder / "model.safetensors"),
                         "class": f"transformers.{cls.__name__}",
                         "transformers": transformers.__version__},
                        {"class": f"transformers:{cls.__name__}", "kwargs": {}},
                        folder.name)


class _KeywordCall(torch.nn.Module):
    """``model(pixel_values=x)`` returning the ModelOutput's top-level tensors, in order."""

    def __init__(self, model: torch.nn.Module, input_name: str, outputs: list[str]) -> None:
        super().__init__()
        self.model, self.input_name, self.outputs = model, input_name, outputs

    def forward(self, x: torch.Tensor) -> tuple:
        out = self.model(**{self.input_name: x})
        return tuple(out[k] for k in self.outputs)


def open_module_source(src: str | Path, shapes: list[str] = (), zoo: str | Path | None = None,
                       trust_code: bool = False) -> ModuleSource | None:
    """SRC as a module source, or None when it is a foreign model file (or catalog name).

    A porter output whose graph is generated source loads only with ``trust_code``."""
    p = Path(src)
    if p.is_dir() and (p / "manifest.json").is_file():
        return _porter_output(p, list(shapes), trust_code)
    if p.is_dir() and is_hf_folder(p):
        return _hf_folder(p, list(shapes))
    if not p.exists() and os.sep not in str(src) and not p.suffix:
        from porter.zoo.pull import find

        entry = find(str(src), zoo)
        if entry is not None:
            return _porter_output(entry, list(shapes), trust_code)
    return None
