"""The plugin nodes of the step graph: op_type, inputs, outputs and attributes of each custom op,
written once here for the graph builder (``step_graph``) and the CPU run of the graph
(``onnx_runner``). The same contracts are the TensorRT plugins' (docs/plugins.md, C++ in
csrc/plugins/*_rules.h); ``tests/test_step_graph.py`` checks the attribute names and types against
the creators of the built plugin library and the input order against docs/ops.md.

In ONNX a plugin node has ``domain = DOMAIN`` and ``op_type`` = the plugin name; TensorRT's parser
takes the version from the node's ``plugin_version`` attribute (default "1") and the namespace from
the domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.targets import SCALE_LAYOUTS, W4A4, W4A16

DOMAIN = "qwen35_trt"
PLUGIN_VERSION = "1"


@dataclass(frozen=True)
class PluginContract:
    op_type: str
    inputs: tuple[str, ...]  # in order; ``optional`` ones may be left off the end
    outputs: tuple[str, ...]
    attributes: dict[str, type] = field(default_factory=dict)  # name -> int | float | str
    optional: tuple[str, ...] = ()
    aliases: dict[int, int] = field(default_factory=dict)  # output index -> the input it updates in place
    values: dict[str, tuple] = field(default_factory=dict)  # attribute -> its allowed values, where they are a list

    def check(self, inputs: list[str], attributes: dict) -> None:
        """Raises ValueError when a node would break the contract (builder bugs, not user errors)."""
        required = len(self.inputs) - len(self.optional)
        if not required <= len(inputs) <= len(self.inputs):
            raise ValueError(f"{self.op_type}: {len(inputs)} inputs, expected {required}..{len(self.inputs)} ({', '.join(self.inputs)})")
        for name, value in attributes.items():
            kind = self.attributes.get(name)
            if kind is None or not isinstance(value, kind) or isinstance(value, bool):
                raise ValueError(f"{self.op_type}: attribute {name}={value!r} is not one of {self.attributes}")
            if name in self.values and value not in self.values[name]:
                raise ValueError(f"{self.op_type}: attribute {name}={value!r}, expected one of {', '.join(map(repr, self.values[name]))}")


CAUSAL_CONV1D = PluginContract(
    "Qwen35CausalConv1d",
    ("x", "weight", "conv_state_pool", "slots", "cu_seqlens", "has_initial_state"),
    ("y", "conv_state_pool"),
    {"width": int, "activation": str},
    aliases={1: 2},
)
GATED_DELTA_NET = PluginContract(
    "Qwen35GatedDeltaNet",
    ("q", "k", "v", "a", "b", "A_log", "dt_bias", "state_pool", "slots", "cu_seqlens", "has_initial_state"),
    ("o", "state_pool"),
    {"scale": float, "use_qk_l2norm": int, "algorithm": str},
    aliases={1: 7},
)
NVFP4_LINEAR = PluginContract(
    "Qwen35Nvfp4Linear",
    ("x", "weight", "weight_scale", "weight_scale_2", "input_scale"),
    ("y",),
    {"scale_layout": str, "activation": str},
    optional=("input_scale",),
    # scale_layout names how the weight is stored, codes included ("w4a16_fragments"; docs/ops.md).
    values={"scale_layout": SCALE_LAYOUTS, "activation": (W4A16, W4A4)},
)
_MOE_SHARED = ("shared_gate_weight", "shared_gate_weight_scale", "shared_gate_weight_scale_2", "shared_gate_input_scale",
               "shared_up_weight", "shared_up_weight_scale", "shared_up_weight_scale_2", "shared_up_input_scale",
               "shared_down_weight", "shared_down_weight_scale", "shared_down_weight_scale_2", "shared_down_input_scale",
               "shared_expert_gate_weight")
NVFP4_MOE = PluginContract(
    "Qwen35Nvfp4MoE",
    ("hidden", "router_logits", "gate_up_weight", "gate_up_weight_scale", "gate_up_weight_scale_2", "down_weight",
     "down_weight_scale", "down_weight_scale_2", "gate_up_input_scale", "down_input_scale", *_MOE_SHARED),
    ("out",),
    {"top_k": int, "scale_layout": str, "activation": str, "shared_expert": int},
    # The input scales only with activation "w4a4", the shared_* inputs only with shared_expert=1:
    # a node leaves out the absent ones wherever they are, so the inputs then shift (docs/plugins.md).
    optional=("gate_up_input_scale", "down_input_scale", *_MOE_SHARED),
    values={"scale_layout": SCALE_LAYOUTS, "activation": (W4A16, W4A4)},
)
GATED_ATTENTION = PluginContract(
    "Qwen35GatedAttention",
    ("qg", "k", "v", "q_norm_weight", "k_norm_weight", "kv_pool", "block_tables", "cu_seqlens", "context_lens"),
    ("out", "kv_pool"),
    {"num_heads": int, "num_kv_heads": int, "head_dim": int, "rotary_dim": int, "rope_theta": float, "eps": float,
     "scale": float},
    aliases={1: 5},
)

PLUGINS: dict[str, PluginContract] = {
    c.op_type: c for c in (CAUSAL_CONV1D, GATED_DELTA_NET, NVFP4_LINEAR, NVFP4_MOE, GATED_ATTENTION)
}
