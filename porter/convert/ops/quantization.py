"""quantization converters (being written)."""

from __future__ import annotations
