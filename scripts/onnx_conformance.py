"""Run the ONNX backend node test suite through porter (and onnx2torch when it imports).

    .venv/bin/python scripts/onnx_conformance.py [--json out.json] [--filter REGEX] [--quiet]

Each case carries its model, inputs, expected outputs and rtol/atol; a case passes when every
output matches ``np.testing.assert_allclose(actual, expected, rtol, atol)`` (and dtypes agree).
Prints pass / mismatch / error per op and in total, for each converter.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


_ML_DTYPES = {"bfloat16": "bfloat16", "float8_e4m3fn": "float8_e4m3fn",
              "float8_e5m2": "float8_e5m2", "float8_e4m3fnuz": "float8_e4m3fnuz",
              "float8_e5m2fnuz": "float8_e5m2fnuz"}


def _to_numpy(a) -> np.ndarray:
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(a) if isinstance(a, TensorProto) else np.asarray(a)


def _to_torch(a):
    """A case's input as a torch tensor (ml_dtypes bfloat16 / float8 are reinterpreted).

    ONNX sequence inputs (python lists, possibly of differently shaped tensors) become lists of
    tensors and an empty optional (None) stays None, the runtime forms porter uses for them.
    """
    import torch

    if a is None:
        return None
    if isinstance(a, (list, tuple)):
        return [_to_torch(x) for x in a]

    a = np.array(_to_numpy(a))
    if a.dtype.name in _ML_DTYPES:
        raw = a.view(np.uint16 if a.dtype.itemsize == 2 else np.uint8)
        return torch.from_numpy(raw).view(getattr(torch, _ML_DTYPES[a.dtype.name]))
    return torch.from_numpy(a) if a.ndim else torch.tensor(a.item(), dtype=torch.from_numpy(
        a.reshape(1)).dtype)


def _compare(outputs, expected, rtol: float, atol: float) -> bool:
    if len(outputs) < len(expected):
        return False
    for out, exp in zip(outputs, expected):
        if isinstance(exp, (list, tuple)) or exp is None:  # a sequence or an optional output
            if exp is None or out is None:
                if not (exp is None and out is None):
                    return False
                continue
            if not isinstance(out, (list, tuple)) or len(out) != len(exp):
                return False
            if not _compare(list(out), list(exp), rtol, atol):
                return False
            continue
        if not hasattr(out, "detach"):
            return False
        low = str(out.dtype).removeprefix("torch.") in _ML_DTYPES
        got = out.detach().float().numpy() if low else out.detach().numpy()
        exp = _to_numpy(exp)
        if exp.dtype.name in _ML_DTYPES:
            if not low:
                return False
            exp = exp.astype(np.float32)
        if got.shape != exp.shape:
            return False
        if exp.dtype == object or got.dtype.kind != exp.dtype.kind and not (
                got.dtype.kind in "iu" and exp.dtype.kind in "iu"):
            return False
        if exp.dtype.kind == "b":
            if not np.array_equal(got, exp):
                return False
            continue
        try:
            np.testing.assert_allclose(got.astype(np.float64), exp.astype(np.float64),
                                       rtol=rtol, atol=atol)
        except AssertionError:
            return False
    return True


def run_porter(case) -> str:
    import torch

    from porter.converters import convert_onnx

    module = convert_onnx(case.model)
    for inputs, expected in case.data_sets:
        with torch.no_grad():
            out = module(*[_to_torch(a) for a in inputs])
        outs = list(out) if isinstance(out, tuple) else [out]
        if not _compare(outs, expected, case.rtol, case.atol):
            return "mismatch"
    return "pass"


def run_onnx2torch(case) -> str:
    import onnx2torch
    import torch

    module = onnx2torch.convert(case.model)
    for inputs, expected in case.data_sets:
        with torch.no_grad():
            out = module(*[_to_torch(a) for a in inputs])
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        if not _compare(outs, expected, case.rtol, case.atol):
            return "mismatch"
    return "pass"


def _import_onnx2torch() -> str:
    """Import onnx2torch; returns a note on how it was measured.

    onnx2torch imports torchvision at module level for two converters only (NonMaxSuppression
    and RoiAlign). torchvision has no CPU build here, so when it is missing a placeholder
    module is registered whose functions raise when *called*: onnx2torch imports, every other
    converter is measured for real, and cases that reach those two count as onnx2torch errors.
    The placeholder lives in this measuring script only; porter never imports torchvision.
    """
    import importlib.util
    import sys
    import types

    if importlib.util.find_spec("torchvision") is not None:
        import onnx2torch  # noqa: F401

        return "torchvision installed"

    def missing(name: str):
        def fn(*args, **kwargs):
            raise RuntimeError(f"torchvision.{name} needed, torchvision is not installed")
        return fn

    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    def lookup(name: str):  # PEP 562 module __getattr__; dunders stay genuinely absent
        if name.startswith("__"):
            raise AttributeError(name)
        return missing(f"ops.{name}")

    ops.__getattr__ = lookup
    tv.ops = ops
    sys.modules.setdefault("torchvision", tv)
    sys.modules.setdefault("torchvision.ops", ops)
    import onnx2torch  # noqa: F401

    return ("torchvision not installed: onnx2torch's NonMaxSuppression and RoiAlign converters "
            "raise when used and count as its errors")


def _case_op(case) -> str:
    ops = [n.op_type for n in case.model.graph.node]
    name = case.name.removeprefix("test_")
    for op in sorted(set(ops), key=len, reverse=True):
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", op).lower()
        if name.startswith(snake) or name.startswith(op.lower()):
            return op
    return ops[-1] if ops else "?"


def run_suite(runner, cases) -> dict:
    per_op: dict[str, Counter] = defaultdict(Counter)
    results = {}
    for case in cases:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                status = runner(case)
        except Exception:  # each case is isolated: any failure counts as an error
            status = "error"
        results[case.name] = status
        per_op[_case_op(case)][status] += 1
    total = Counter(results.values())
    return {"total": dict(total), "per_op": {k: dict(v) for k, v in sorted(per_op.items())},
            "cases": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the full results to this file")
    ap.add_argument("--filter", help="only cases whose name matches this regex")
    ap.add_argument("--quiet", action="store_true", help="totals only")
    args = ap.parse_args(argv)

    import onnx
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    if args.filter:
        cases = [c for c in cases if re.search(args.filter, c.name)]
    report = {"onnx": onnx.__version__, "n_cases": len(cases), "converters": {}}
    runners = {"porter": run_porter}
    notes: dict[str, str] = {}
    try:
        notes["onnx2torch"] = _import_onnx2torch()
        runners["onnx2torch"] = run_onnx2torch
    except Exception as exc:  # not installed, or broken in another way
        report["converters"]["onnx2torch"] = {"unavailable": f"{type(exc).__name__}: {exc}"}
    for name, runner in runners.items():
        t0 = time.perf_counter()
        res = run_suite(runner, cases)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        if name in notes:
            res["note"] = notes[name]
        report["converters"][name] = res
    for name, res in report["converters"].items():
        print(f"== {name} ==")
        if "unavailable" in res:
            print(f"unavailable: {res['unavailable']}")
            continue
        if not args.quiet:
            for op, c in res["per_op"].items():
                print(f"  {op:32s} pass {c.get('pass', 0):4d}  mismatch {c.get('mismatch', 0):4d}"
                      f"  error {c.get('error', 0):4d}")
        if res.get("note"):
            print(f"note: {res['note']}")
        t = res["total"]
        print(f"TOTAL {name}: pass {t.get('pass', 0)} / {len(cases)}, mismatch "
              f"{t.get('mismatch', 0)}, error {t.get('error', 0)} ({res['seconds']} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
