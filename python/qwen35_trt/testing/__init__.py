"""Fixtures for tests, benchmarks and the demo, kept out of the product's modules: real ModelOpt
NVFP4 exports of tiny Qwen3.5 MoE models (``tiny_checkpoint``, needs the ``fixtures`` extra) and
synthetic checkpoints with the full 35B-A3B dimensions (``synthetic``). Nothing in the builder,
the model or the serving runtime imports this package."""
