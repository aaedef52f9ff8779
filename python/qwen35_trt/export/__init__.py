"""The engine's TensorRT step graph (``model.onnx``): the plugin contracts, the graph builder and a
CPU run of the graph (docs/engine_dir.md, docs/step_graph.md)."""
