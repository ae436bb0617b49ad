"""Regenerate porter's committed list of ATen ops that torch_npu has NPU kernels for.

Reads a torch_npu wheel (never installed: without Ascend CANN it breaks ``import torch``) or an
installed torch_npu package directory, and writes the JSON op list with a header recording the
source file, its sha256, the torch_npu version and the date.

    pip download --no-deps torch-npu==2.13.0 -d /tmp/npuwheel
    python scripts/refresh_npu_registry.py /tmp/npuwheel/torch_npu-2.13.0-*.whl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from porter.verification.npu.registry import load_registry

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "porter" / "verify" / "npu"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="torch_npu wheel, package directory, or 'installed'")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="output file (default: porter/verification/npu/npu_ops_torch_npu_<v>.json)")
    args = parser.parse_args(argv)
    registry = load_registry(args.source)
    out = args.output or DEFAULT_OUT / f"npu_ops_torch_npu_{registry.version}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(registry.to_json(), indent=1) + "\n", encoding="utf-8")
    tmp.replace(out)
    print(f"{out}: {len(registry.ops)} ATen ops from {registry.source} "
          f"(torch_npu {registry.version}, sha256 {registry.sha256[:12]}…)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
