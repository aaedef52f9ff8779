"""Qwen35GatedAttention in a real TensorRT builder: TensorRT-RTX parses one-node ONNX graphs into the
plugin and builds SM120 engines on the CPU (dynamic tokens, sequences, blocks and table width in one
optimisation profile; the bf16 norm weights as initialisers; the paged KV pool aliased, which needs
the preview feature), and refuses what the plugin refuses (a wrong dtype, shapes against the fields,
bad fields, an unknown plugin version) with named errors. Enqueue needs a GPU (ctest plugin_cuda).

Skipped (with the reason) when ``tensorrt_rtx`` cannot be imported or the build has no CUDA kernels.
"""

import pytest

from plugin_builds import build_sm120, one_node_model, tensorrt_with_plugins
from qwen35_trt import _C

ATTENTION = "Qwen35GatedAttention"
# Qwen3.5-35B-A3B's full-attention layers.
HEADS, KV_HEADS, HEAD_DIM, ROTARY_DIM, BLOCK_SIZE = 16, 2, 256, 64, 16
FIELDS = {"num_heads": HEADS, "num_kv_heads": KV_HEADS, "head_dim": HEAD_DIM, "rotary_dim": ROTARY_DIM,
          "rope_theta": 1.0e7, "eps": 1.0e-6}

pytestmark = pytest.mark.skipif(
    not _C.build_info()["cuda_architectures"], reason="built without CUDA: no plugin library"
)


@pytest.fixture(scope="module")
def trt():
    return tensorrt_with_plugins(ATTENTION)


def attention_model(nh=HEADS, nkv=KV_HEADS, hd=HEAD_DIM, bs=BLOCK_SIZE, attrs=None, pool_hd=None, types=None):
    """One Qwen35GatedAttention node: qg, k, v [tokens, ...], the KV pool [num_blocks, 2, nkv, bs, hd]
    (output 1 aliases it), block_tables [batch, max_blocks], cu_seqlens [batch + 1], context_lens
    [batch]; the norm weights are bf16 initialisers. ``types`` overrides input dtypes by name."""
    from onnx import TensorProto, helper

    bf16, i32 = TensorProto.BFLOAT16, TensorProto.INT32
    types = {"qg": bf16, "k": bf16, "v": bf16, "kv_pool": bf16, "block_tables": i32, "cu_seqlens": i32,
             "context_lens": i32, **(types or {})}
    pool = ["num_blocks", 2, nkv, bs, pool_hd or hd]
    inputs = [
        helper.make_tensor_value_info("qg", types["qg"], ["tokens", nh * 2 * hd]),
        helper.make_tensor_value_info("k", types["k"], ["tokens", nkv * hd]),
        helper.make_tensor_value_info("v", types["v"], ["tokens", nkv * hd]),
    ]
    norms = [helper.make_tensor(name, bf16, [hd], [0.01 * (i % 7) for i in range(hd)])
             for name in ("q_norm_weight", "k_norm_weight")]
    rest = [
        helper.make_tensor_value_info("kv_pool", types["kv_pool"], pool),
        helper.make_tensor_value_info("block_tables", types["block_tables"], ["batch", "max_blocks"]),
        helper.make_tensor_value_info("cu_seqlens", types["cu_seqlens"], ["batch_plus_1"]),
        helper.make_tensor_value_info("context_lens", types["context_lens"], ["batch"]),
    ]
    outputs = [
        helper.make_tensor_value_info("out", bf16, ["tokens", nh * hd]),
        helper.make_tensor_value_info("kv_pool_out", types["kv_pool"], pool),
    ]
    order = ["qg", "k", "v", "q_norm_weight", "k_norm_weight", "kv_pool", "block_tables", "cu_seqlens", "context_lens"]
    return one_node_model(ATTENTION, inputs + rest, outputs, FIELDS if attrs is None else attrs, norms, order)


def build(trt, model: bytes, nh=HEADS, nkv=KV_HEADS, hd=HEAD_DIM, bs=BLOCK_SIZE, tokens=(1, 256, 8192),
          batch=(1, 8, 256), blocks=(1, 512, 4096), max_blocks=(1, 64, 512), aliased_io=True):
    """An SM120 plan with one profile over T, B, the pool's blocks and the table width."""
    shapes = {
        "qg": [(t, nh * 2 * hd) for t in tokens],
        "k": [(t, nkv * hd) for t in tokens],
        "v": [(t, nkv * hd) for t in tokens],
        "kv_pool": [(n, 2, nkv, bs, hd) for n in blocks],
        "block_tables": [(b, m) for b, m in zip(batch, max_blocks)],
        "cu_seqlens": [(b + 1,) for b in batch],
        "context_lens": [(b,) for b in batch],
    }
    return build_sm120(trt, model, shapes, aliased_io=aliased_io)


def test_gated_attention_prefill_builds_for_sm120(trt):
    plan, errors = build(trt, attention_model())
    assert not errors
    assert plan is not None and len(plan) > 0


def test_gated_attention_decode_profile_and_other_heads_build(trt):
    """A decode-shaped profile (T in B's range), MHA with full RoPE, one-token blocks, eps = 0 (the
    closed end of its range) and an explicit scale."""
    attrs = {"num_heads": 8, "num_kv_heads": 8, "head_dim": 128, "rotary_dim": 128, "rope_theta": 10000.0,
             "eps": 0.0, "scale": 0.1}
    plan, errors = build(trt, attention_model(nh=8, nkv=8, hd=128, bs=1, attrs=attrs), nh=8, nkv=8, hd=128, bs=1,
                         tokens=(1, 8, 256), batch=(1, 8, 256))
    assert not errors and plan is not None


def test_aliased_pool_needs_the_preview_feature(trt):
    plan, _ = build(trt, attention_model(), aliased_io=False)
    assert plan is None, "the aliased kv_pool output builds only with ALIASED_PLUGIN_IO_10_03"


@pytest.mark.parametrize(
    "types, message",
    [
        ({"qg": "FLOAT16"}, "qg: expected bf16, got fp16"),
        ({"kv_pool": "FLOAT"}, "kv_pool: expected bf16, got fp32"),
        ({"block_tables": "INT64"}, "block_tables: expected int32, got int64"),
    ],
)
def test_builder_refuses_wrong_dtypes(trt, capfd, types, message):
    from onnx import TensorProto

    plan, _ = build(trt, attention_model(types={k: getattr(TensorProto, v) for k, v in types.items()}))
    assert plan is None
    assert f"qwen35_trt::{ATTENTION}: {message}" in capfd.readouterr().err


def test_builder_refuses_a_pool_of_another_head_dim(trt, capfd):
    plan, _ = build(trt, attention_model(pool_hd=128))
    assert plan is None
    assert (f"qwen35_trt::{ATTENTION}: kv_pool: must be [num_blocks, 2, num_kv_heads, block_size, head_dim] = "
            "[num_blocks, 2, 2, block_size, 256]") in capfd.readouterr().err


def test_builder_refuses_unknown_plugin_version(trt):
    plan, errors = build(trt, attention_model(attrs={**FIELDS, "plugin_version": "2"}))
    assert plan is None and errors, "version 2 of the plugin does not exist"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"head_dim": 48}, "field 'head_dim': expected a multiple of 32 in [32, 256]"),
        ({"head_dim": 512}, "field 'head_dim': expected one integer (INT32) in [32, 256], got 512"),
        ({"num_kv_heads": 3}, "field 'num_kv_heads': must divide num_heads = 16, got 3"),
        ({"rotary_dim": 63}, "field 'rotary_dim': expected an even integer in [0, head_dim = 256]"),
        ({"rope_theta": 0.0}, "field 'rope_theta': expected one finite float (FLOAT32) in (0, inf), got 0"),
        ({"eps": -1.0}, "field 'eps': expected one finite float (FLOAT32) in [0, inf), got -1"),
        ({"eps": 0}, "field 'eps': expected one finite float (FLOAT32) in [0, inf), got INT32"),
        ({"scale": 0.0}, "field 'scale': expected one finite float (FLOAT32) in (0, inf), got 0"),
        ({"eps": None}, "field 'eps': missing (expected one finite float (FLOAT32) in [0, inf))"),
        ({"num_heads": None}, "field 'num_heads': missing (expected one integer (INT32) in [1, 65535])"),
    ],
)
def test_parser_refuses_bad_fields_with_named_errors(trt, capfd, change, message):
    attrs = {k: v for k, v in {**FIELDS, **change}.items() if v is not None}
    plan, _ = build(trt, attention_model(attrs=attrs))
    assert plan is None
    assert f"qwen35_trt::{ATTENTION}: {message}" in capfd.readouterr().err
