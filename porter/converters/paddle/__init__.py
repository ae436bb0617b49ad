"""Direct Paddle -> PyTorch conversion: Paddle inference programs (legacy ProgramDesc and PIR
JSON) become the same plan-driven module the ONNX converter builds, with no ONNX in between.

- :func:`convert_paddle` converts a ``paddle-inference`` Source;
- converters live in ``porter.converters.paddle.ops``, one module per op family, in a
  registry keyed by Paddle op type (:func:`paddle_op`); a program with unknown ops is refused
  with all of them listed (:class:`UnsupportedPaddleOpsError`).
"""

from __future__ import annotations

from porter.converters.paddle.builder import convert_paddle
from porter.converters.paddle.registry import UnsupportedPaddleOpsError, paddle_op, supported_ops

__all__ = ["convert_paddle", "paddle_op", "supported_ops", "UnsupportedPaddleOpsError"]
