"""Reports people look at: the parity table as Markdown and HTML, and PNGs per input picture.

For every ``--input`` picture the report holds the first output of both runtimes as images
(``NAME_reference.png``, ``NAME_porter.png``, as the seeds' ``matte_ort_cpu.png``) and a heat map
of their absolute difference (``NAME_diff.png``, black = 0, white = the largest difference, whose
value the report states). Everything lands under ``report/`` in the output folder, and in
``--report DIR`` when asked.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Shot", "render_report", "to_png", "heat_png"]


class Shot:
    """One picture's first output from the reference runtime and from porter's module."""

    def __init__(self, name: str, output: str, reference: np.ndarray, candidate: np.ndarray):
        self.name, self.output = name, output
        self.reference, self.candidate = np.asarray(reference), np.asarray(candidate)


def _plane(a: np.ndarray) -> np.ndarray:
    """An output tensor -> HxW or HxWx3 float image (first batch item; NCHW or NHWC)."""
    a = np.asarray(a, dtype=np.float64)
    while a.ndim > 3:
        a = a[0]
    if a.ndim == 3:
        if a.shape[0] in (1, 3):  # NCHW (porter's modules) unless only the last axis fits
            a = np.moveaxis(a, 0, -1)
        a = a[..., 0] if a.shape[-1] == 1 else a[..., :3]
    if a.ndim == 1:
        a = a[None, :]
    return a


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def to_png(a: np.ndarray, lo: float, hi: float) -> bytes:
    """An output as an 8-bit PNG, mapped linearly from [lo, hi]."""
    p = _plane(a)
    scale = (hi - lo) or 1.0
    return _png(np.clip(np.round((p - lo) / scale * 255), 0, 255).astype(np.uint8))


def heat_png(diff: np.ndarray) -> bytes:
    """|Δ| as a heat map: black -> red -> yellow -> white, scaled to its own maximum."""
    d = _plane(diff)
    if d.ndim == 3:
        d = d.max(axis=-1)
    t = d / (d.max() or 1.0)
    rgb = np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], -1)
    return _png(np.round(rgb * 255).astype(np.uint8))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".") or "image"


def _fp16_line(npu: dict[str, Any]) -> str | None:
    fp16 = (npu or {}).get("fp16") or {}
    if not fp16.get("verdict"):
        return None
    return f"fp16 rerun: {fp16['verdict']} ({fp16.get('verdict_reason')})"


def render_report(manifest: dict[str, Any], shots: Sequence[Shot] = ()) -> dict[str, str | bytes]:
    """Files of the report, keyed ``report/...``: report.md, report.html and the PNGs."""
    files: dict[str, str | bytes] = {}
    parity = manifest.get("parity") or {}
    rows = []
    for case in parity.get("cases", []):
        for out, m in case.get("outputs", {}).items():
            rows.append((case["name"], out, m.get("max_abs"), m.get("mean_abs"), m.get("cosine"),
                         m.get("psnr"), "ok" if m.get("passed") else "FAIL"))
    head = ("case", "output", "max abs", "mean abs", "cosine", "PSNR dB", "")

    def cell(v: Any) -> str:
        return f"{v:.3e}" if isinstance(v, float) and abs(v) < 1e-2 else (
            f"{v:.6g}" if isinstance(v, float) else str(v))

    title = f"porter report: {manifest.get('name')}"
    verdict = ("PASS" if parity.get("passed") else "FAIL") if parity else "not verified"
    summary = (f"Parity of `{manifest['graph']['class']}` against {parity.get('reference')}: "
               f"**{verdict}**, worst max|Δ| {cell(parity.get('worst_max_abs'))}"
               if parity else "Parity: not verified (--verify none).")
    md = [f"# {title}", "", summary, ""]
    if rows:
        md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        md += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
        md.append("")
    fp16 = _fp16_line(manifest.get("npu") or {})
    if fp16:
        md += [fp16, ""]
    figures = []
    for shot in shots:
        stem = _safe(shot.name.removeprefix("image:"))
        lo = float(min(shot.reference.min(), shot.candidate.min()))
        hi = float(max(shot.reference.max(), shot.candidate.max()))
        diff = np.abs(shot.reference.astype(np.float64) - shot.candidate.astype(np.float64))
        names = {kind: f"{stem}_{kind}.png" for kind in ("reference", "porter", "diff")}
        files[f"report/{names['reference']}"] = to_png(shot.reference, lo, hi)
        files[f"report/{names['porter']}"] = to_png(shot.candidate, lo, hi)
        files[f"report/{names['diff']}"] = heat_png(diff)
        figures.append((shot, names, float(diff.max())))
        md += [f"## {shot.name}: output `{shot.output}`", "",
               f"| {parity.get('reference')} | porter | abs difference (white = {diff.max():.3e}) |",
               "|---|---|---|",
               f"| ![]({names['reference']}) | ![]({names['porter']}) | ![]({names['diff']}) |", ""]
    files["report/report.md"] = "\n".join(md)
    esc = html.escape
    table = ""
    if rows:
        table = ("<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"
                 + "".join("<tr>" + "".join(f"<td>{esc(cell(v))}</td>" for v in r) + "</tr>"
                           for r in rows) + "</table>")
    pics = "".join(
        f"<h2>{esc(s.name)}: output {esc(s.output)}</h2><table><tr><th>{esc(str(parity.get('reference')))}"
        f"</th><th>porter</th><th>abs difference (white = {mx:.3e})</th></tr><tr>"
        + "".join(f'<td><img src="{esc(n)}" style="max-width:320px"></td>' for n in names.values())
        + "</tr></table>" for s, names, mx in figures)
    files["report/report.html"] = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:3px 6px}"
        "table{border-collapse:collapse}</style></head><body>"
        f"<h1>{esc(title)}</h1><p>{esc(summary.replace('**', ''))}</p>{table}"
        + (f"<p>{esc(fp16)}</p>" if fp16 else "") + pics + "</body></html>\n")
    return files
