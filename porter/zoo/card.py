"""What a zoo entry tells people and tools: a model card (README.md) and a config.json.

The card follows the Hugging Face / ModelScope convention: YAML front matter (licence, tags,
task, library, source) then prose: what the model is, how to load it, its preprocessing
contract, and the parity and NPU figures porter measured. ``config.json`` holds the graph and
its constructor kwargs, enough to rebuild the module without porter's manifest.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

__all__ = ["model_card", "config_json", "catalog_card"]


def catalog_card(source_sha256: str, name: str) -> dict[str, Any]:
    """Card facts (licence, description, task, tags) from the catalog entry whose source has
    this digest (or this name); empty when the model is not in the catalog."""
    from porter.zoo.catalog import load_catalog

    try:
        catalog = load_catalog()
    except Exception:  # a broken $PORTER_CATALOG must not stop a conversion of a local file
        return {}
    for key, entry in catalog.items():
        if entry.get("sha256") == source_sha256 or key == name:
            card = {"catalog": key, "license": entry.get("licence") or entry.get("license"),
                    "description": entry.get("description"), "task": entry.get("task"),
                    "tags": list(entry.get("tags", [])), "homepage": entry.get("homepage")}
            return {k: v for k, v in card.items() if v}
    return {}


def config_json(manifest: dict[str, Any]) -> dict[str, Any]:
    """The graph, its kwargs, its inputs/outputs and preprocessing, for tools that want no more."""
    graph = manifest["graph"]
    return {"porter_version": manifest.get("porter"), "name": manifest.get("name"),
            "graph_class": graph["class"], "graph_kwargs": graph.get("kwargs", {}),
            "inputs": manifest.get("io", {}).get("inputs"),
            "outputs": manifest.get("io", {}).get("outputs"),
            "preprocessing": manifest.get("preprocessing"),
            "weights": "model.safetensors", "format": "pt"}


def _fmt(x: Any) -> str:
    return f"{x:.2e}" if isinstance(x, float) else str(x)


def model_card(manifest: dict[str, Any]) -> str:
    """README.md for an output folder or zoo entry, from its manifest."""
    card = manifest.get("card") or {}
    graph = manifest["graph"]
    parity = manifest.get("parity") or {}
    npu = manifest.get("npu") or {}
    src = manifest.get("source", {})
    front = {
        "license": card.get("license", "unknown"),
        "library_name": "pytorch",
        "tags": sorted({"porter", "safetensors", src.get("format", "unknown"), *card.get("tags", [])}),
        "pipeline_tag": card.get("task"),
        "source": {"file": src.get("path"), "format": src.get("format"), "sha256": src.get("sha256"),
                   "catalog": card.get("catalog")},
        "porter": {"graph": graph["class"], "kwargs": graph.get("kwargs", {}),
                   "parity_reference": parity.get("reference"),
                   "parity_passed": parity.get("passed"),
                   "parity_worst_max_abs": parity.get("worst_max_abs"),
                   "npu": npu.get("device")},
        "preprocessing": manifest.get("preprocessing"),
    }
    front = {k: v for k, v in front.items() if v is not None}
    name = manifest.get("name", "model")
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {name}", ""]
    if card.get("description"):
        lines += [card["description"], ""]
    lines += [f"Converted by porter {manifest.get('porter')} from `{src.get('path')}` "
              f"({src.get('format')}, sha256 `{src.get('sha256')}`) onto `{graph['class']}`.",
              f"Licence: {card.get('license', 'unknown (not in the catalog; check the source)')}.",
              "", "## Usage", "", "```python"]
    if graph["class"].partition(":")[0].endswith(".py"):
        lines += ["import porter",
                  f"model = porter.load({name!r}, trust_code=True)  # runs the generated model.py"]
    else:
        mod, _, cls = graph["class"].partition(":")
        lines += ["# with porter installed:", "import porter", f"model = porter.load({name!r})", "",
                  "# or with plain safetensors:", "from safetensors.torch import load_file",
                  f"from {mod} import {cls}",
                  f"model = {cls}(**{json.dumps(graph.get('kwargs', {}))})",
                  'model.load_state_dict(load_file("model.safetensors")); model.eval()']
    lines += ["```", ""]
    prep = manifest.get("preprocessing")
    if prep:
        lines += ["## Preprocessing", ""] + [f"- **{k}**: {v}" for k, v in prep.items()] + [""]
    if parity:
        lines += ["## Parity", "", f"Against {parity.get('reference')}: "
                  f"**{'PASS' if parity.get('passed') else 'FAIL'}**, worst max|Δ| "
                  f"{_fmt(parity.get('worst_max_abs'))}.", "",
                  "| case | output | max abs | mean abs | cosine |", "|---|---|---|---|---|"]
        for case in parity.get("cases", []):
            for out, m in case.get("outputs", {}).items():
                lines.append(f"| {case['name']} | {out} | {_fmt(m.get('max_abs'))} | "
                             f"{_fmt(m.get('mean_abs'))} | {m.get('cosine')} |")
        lines.append("")
    if npu:
        lines += ["## NPU", ""]
        if npu.get("device") == "npu":
            lines.append(f"Ran on an Ascend device: {'PASS' if npu.get('passed') else 'FAIL'}.")
        else:
            lines.append(f"Static audit (no device): {len(npu.get('ops', []))} ATen ops, "
                         f"{len(npu.get('missing', []))} without an NPU kernel.")
            fp16 = npu.get("fp16") or {}
            if fp16.get("verdict"):
                lines.append(f"fp16 rerun: **{fp16['verdict']}** ({fp16.get('verdict_reason')}).")
        lines.append("")
    return "\n".join(lines)
