#!/usr/bin/env python3
"""Build TensorRT-ready engine directories from ModelOpt NVFP4 Qwen3.5 checkpoints.

Run ``python build_engine.py --help``; the logic lives in ``qwen35_trt.cli``.
"""

import sys

from qwen35_trt.cli import main

if __name__ == "__main__":
    sys.exit(main())
