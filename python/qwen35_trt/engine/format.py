"""The engine directory's file names and format versions (docs/engine_dir.md): the one list the
writer, the reader and every consumer use."""

FORMAT_VERSION = 1  # manifest.json's format_version
WEIGHTS_LAYOUT = "qwen35_trt.v3"  # how weights.safetensors is repacked (see writer.py; v3: the W4A16 fragment layout)
EXPERTS_LAYOUT = "fused_gate_up"

MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"
TOKENIZER_FILE = "tokenizer.json"
ONNX_FILE = "model.onnx"  # the step graph (written by the exporter)
PLAN_DIR = "plan"  # plan/<target>.plan: TensorRT engines built for a GPU architecture
