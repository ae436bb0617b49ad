"""Generic ONNX -> PyTorch conversion.

- :func:`convert_onnx` turns an ONNX model into an ``nn.Module`` with named parameters;
- :func:`export_source` writes that module as readable python (``model.py``) plus its weights
  (``model.safetensors``);
- converters live in ``porter.converters.ops`` in a registry keyed by (domain, op, since_version).
"""

from __future__ import annotations

from porter.converters.builder import convert_onnx
from porter.converters.module import OnnxModule
from porter.converters.registry import converter, lookup, supported_ops

__all__ = ["convert_onnx", "export_source", "OnnxModule", "converter", "lookup",
           "supported_ops"]


def export_source(model_or_path, out_dir, class_name: str = "Model"):
    """Write ``out_dir/model.py`` and ``out_dir/model.safetensors``; see porter.converters.codegen."""
    from porter.converters.codegen import export_source as _export

    return _export(model_or_path, out_dir, class_name=class_name)
