"""Benchmark the fp16 rerun of ``--verify npu``: HalfStorage (float16 tensors, float32
arithmetic) against torch's native float16 kernels and against float32, in one process.

    .venv/bin/python scripts/bench_fp16.py [--size 128] [--blocks 2] [--runs 1] [--threads 2]

MODNet (random weights: speed and rounding do not depend on them) at 1x3xSIZExSIZE. Prints each
median wall time, the ratios, and how far each float16 result lies from float32 and from the
other. On a CPU without half-precision units native float16 is the slow side by far.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from benchlib import alternating_ms  # scripts/ is on sys.path when a script runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from porter.graphs.modnet import MODNet
    from porter.verification.runtimes.half_storage import HalfStorage

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    full = MODNet().eval()
    half = copy.deepcopy(full).half()
    x = torch.rand(1, 3, args.size, args.size)
    xh = x.half()

    def emulated():
        with HalfStorage():
            return half(xh)

    with torch.inference_mode():
        ref, nat, emu = full(x), half(xh).float(), emulated().float()
        wall, _ = alternating_ms({"float32": lambda: full(x), "native-float16": lambda: half(xh),
                                  "half-storage": emulated}, args.blocks, args.runs)
    print(f"MODNet 1x3x{args.size}x{args.size}, {args.threads} threads, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}")
    for k, v in wall.items():
        print(f"  {k:15s} {v / 1e3:8.3f} s")
    print(f"  native-float16 / half-storage = {wall['native-float16'] / wall['half-storage']:.1f}x; "
          f"half-storage / float32 = {wall['half-storage'] / wall['float32']:.2f}x")
    print(f"  max|Δ| vs float32: native {(nat - ref).abs().max().item():.3e}, half-storage "
          f"{(emu - ref).abs().max().item():.3e}; between them {(nat - emu).abs().max().item():.3e}")


if __name__ == "__main__":
    main()
