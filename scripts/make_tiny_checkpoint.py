#!/usr/bin/env python3
"""Make a real ModelOpt NVFP4 checkpoint of a tiny random Qwen3.5 MoE model (CPU, seconds)."""

import argparse
import sys
import time

import torch


def main() -> int:
    from qwen35_trt.testing.tiny_checkpoint import VARIANTS, make_tiny_checkpoint

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("output", help="checkpoint directory to write (replaced if it exists)")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="default",
                   help="default: in_proj_a/b kept BF16 (ModelOpt default); nvfp4_ab: quantize them too")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--original", metavar="FILE", help="also save the BF16 weights before quantization here")
    args = p.parse_args()
    torch.set_num_threads(1)
    t = time.perf_counter()
    out = make_tiny_checkpoint(args.output, args.variant, args.seed, args.original)
    print(f"tiny checkpoint ({args.variant}, seed {args.seed}) written to {out} in {time.perf_counter() - t:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
