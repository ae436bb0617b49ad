"""vision_extra converters (being written)."""

from __future__ import annotations
