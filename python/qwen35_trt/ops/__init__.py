"""Spec ops: the readable PyTorch definition of every op the kernels implement.

One module per op family. Shapes are in each function's docstring. These are slow on purpose:
they are the reference that the C++ CPU reference and the CUDA kernels are tested against, and
they reproduce the bf16/fp32 cast points of transformers' Qwen3.5 implementation so the CPU model
built on them matches it token for token.
"""
