"""The model on an engine's stored NVFP4 layout (what the CUDA executor reads: the W4A16 fragment
layout of sm_90 engines, the swizzled scales of sm_100 ones) gives the same bits as on ModelOpt's
order, checked on the CPU with the C++ reference ops, which read every stored layout."""

from __future__ import annotations

import pytest
import torch

from qwen35_trt.engine.targets import ROW_MAJOR
from qwen35_trt.model import Experts, Qwen35Model
from qwen35_trt.ops import moe_reference
from qwen35_trt.ops.numerics import PLAIN

pytestmark = pytest.mark.skipif(not moe_reference.available(), reason="_C without the C++ reference")


def _logits(model: Qwen35Model, ids: list[int]) -> torch.Tensor:
    cache = model.new_cache(1)
    return model.forward([(cache.allocate(), ids)], cache, all_logits=True)[0]


@pytest.mark.parametrize("variant", ["default", "nvfp4_ab"])  # sm_90 (fragments), sm_100 (swizzled)
def test_stored_layout_same_logits(request, tiny_engines, variant):
    _, engine = tiny_engines.get_engine(request, variant)
    plain = Qwen35Model(engine, gdn_backend="reference", moe_backend="reference", attention_backend="reference")
    stored = Qwen35Model(engine, gdn_backend="reference", moe_backend="reference", attention_backend="reference",
                         nvfp4_layout=plain.engine.scale_layout)
    assert plain.nvfp4_layout == ROW_MAJOR and stored.nvfp4_layout == plain.engine.scale_layout != ROW_MAJOR
    ids = torch.randint(0, plain.cfg.vocab_size, (37,), generator=torch.Generator().manual_seed(5)).tolist()
    assert torch.equal(_logits(plain, ids), _logits(stored, ids))


def test_spec_backend_refuses_a_stored_layout(request, tiny_engines):
    _, engine = tiny_engines.get_engine(request, "default")
    with pytest.raises(ValueError, match="reads NVFP4 weights in 'row_major' only"):
        Qwen35Model(engine, moe_backend="spec", nvfp4_layout="w4a16_fragments")


def test_experts_of_a_mixed_layer_read_modelopt_order(request, tiny_engines):
    """The per-expert spec path (layers whose MoE the Nvfp4MoE contract does not cover) slices
    rows of the expert tensors: given the stored layout it converts them to ModelOpt's order."""
    _, engine = tiny_engines.get_engine(request, "default")
    model = Qwen35Model(engine, moe_backend="reference")
    layout = model.engine.scale_layout
    name = "layers.0.mlp.experts"
    plain = Experts(model.engine.load_weights(), name)
    stored = Experts(model.engine.load_weights(layout), name, layout)
    assert not torch.equal(plain.proj["down_proj"]["weight_scale"], stored.proj["down_proj"]["weight_scale"])
    x = torch.randn(3, model.cfg.hidden_size, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    for e in (0, model.cfg.num_experts - 1):
        assert torch.equal(plain.expert(PLAIN)(e, x), stored.expert(PLAIN)(e, x))
