"""porter: bring third-party vision models onto PyTorch and Ascend NPUs with weights you can trust.

The public API mirrors the CLI: ``open`` a foreign model, ``convert`` it to a clean module,
``verify`` it against its source runtime, ``publish`` it to a local zoo.
"""

from __future__ import annotations

from porter.errors import PorterError
from porter.source import Source, TensorRef

__version__ = "0.1.0"

__all__ = ["open", "Source", "TensorRef", "PorterError", "convert", "convert_onnx", "__version__"]


def open(path, format: str | None = None) -> Source:  # noqa: A001 - mirrors the builtin on purpose
    """Open a model file or folder read-only; the format is sniffed unless ``format`` names it."""
    from porter.importers import open_source

    return open_source(path, format)


def convert(path, **kwargs):
    """Run the import -> map -> substitute -> verify -> write pipeline; see porter.pipeline."""
    from porter.pipeline import convert as _convert

    return _convert(path, **kwargs)


def convert_onnx(model_or_path, **kwargs):
    """Generic ONNX graph -> torch.nn.Module, for models with no clean definition."""
    from porter.converters import convert_onnx as _convert_onnx

    return _convert_onnx(model_or_path, **kwargs)
