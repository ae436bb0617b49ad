"""The checks every ``--to onnx --target atc`` output must pass, re-derived from the files
(the ONNX file judged against the table again, not taken from the manifest)."""

from __future__ import annotations

import json

import onnx


def check_atc_output(out, table, *, min_cases: int):
    m = json.loads((out / "manifest.json").read_text())
    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert m["onnx"]["opset"] == opset == m["atc"]["opset"]
    # every node independently re-judged against the table, not taken from the manifest
    outside = [(n.op_type, n.name) for n in model.graph.node if not table.accepts(n.op_type, opset)]
    assert outside == []
    assert m["atc"]["passed"] and m["atc"]["refused"] == []
    assert m["atc"]["nodes"] == len(model.graph.node)
    assert "data_type: 11" not in str(model.graph)  # no float64 anywhere
    assert m["atc"]["float64"] == [] and m["atc"]["mixed_int32_int64"] == []
    cmd = m["atc"]["command"]
    assert cmd.startswith("atc --framework=5 --model=model.onnx ")
    assert "--soc_version=" in cmd and "--precision_mode=" in cmd and "--input_shape=" in cmd
    assert m["atc"]["caveats"]
    parity = m["parity"]
    assert parity["passed"] and len(parity["cases"]) >= min_cases
    for case in parity["cases"]:
        for name, met in case["outputs"].items():
            assert met["max_abs"] <= 1e-6 + 1e-4 * met["ref_peak"], (case["name"], name)
    return m, model
