"""Mapping source tensors onto a target module: recipes (rules as data) and structural alignment."""

from porter.mapping.recipe import Recipe, load_strict
from porter.mapping.report import MappingEntry, MappingReport

__all__ = ["MappingEntry", "MappingReport", "Recipe", "load_strict"]
