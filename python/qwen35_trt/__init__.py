"""ModelOpt NVFP4 Qwen3.5 hybrid MoE checkpoints to TensorRT engines, served by Triton."""

__version__ = "0.1.0"
