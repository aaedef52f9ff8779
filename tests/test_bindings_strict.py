"""The CUDA entry points of ``_C`` refuse unknown and missing argument keys (no GPU needed).

Pointers, strides and sizes reach the kernels as Python dicts (Nvfp4MoE, Nvfp4Linear) or keyword
arguments (GatedDeltaNet, GatedAttention). A misspelt key must raise an error naming the key and its dict instead of
leaving the field at zero; all of this happens before any CUDA call, so it runs on machines
without a GPU. The argument sets are taken from the real Python callers (ops/moe_cuda.py,
ops/gdn_cuda.py, ops/attention_cuda.py, with their device checks bypassed on CPU tensors), so the tests also prove that
what the callers pass is accepted. No kernel is launched: every call here fails validation first,
or only sizes a workspace.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qwen35_trt import _C
from qwen35_trt.ops import attention_cuda, gdn_cuda, moe_cuda
from qwen35_trt.ops import moe_reference as ref

from test_moe_reference import Case, random_nvfp4

pytestmark = pytest.mark.skipif(not _C.build_info()["cuda_enabled"], reason="_C built without CUDA")


class Captured(Exception):
    def __init__(self, name, args):
        super().__init__(name)
        self.name, self.args_ = name, args


class Recorder:
    """Stands in for ``_C``: forwards workspace sizing, captures the launch arguments."""

    def __init__(self, launches):
        self.launches = launches

    def __getattr__(self, name):
        if name in self.launches:
            def capture(*args, **kwargs):
                raise Captured(name, kwargs if kwargs else args[0])
            return capture
        return getattr(_C, name)


def _any_device(t, name, dtype, device):  # moe_cuda._cuda without the CUDA-device check
    return t


@pytest.fixture
def moe_args(monkeypatch):
    """The dict ops/moe_cuda.nvfp4_moe passes to nvfp4_moe_cuda_workspace_size (with a shared expert)."""
    monkeypatch.setattr(moe_cuda, "_cuda", _any_device)
    monkeypatch.setattr(moe_cuda, "_ext", lambda: Recorder({"nvfp4_moe_cuda_workspace_size"}))
    c = Case(3, 5, 8, 2, 64, 32)
    with pytest.raises(Captured) as e:
        moe_cuda.nvfp4_moe(c.x, c.logits, 2, c.experts, c.shared, backend="w4a16", return_routing=True)
    return e.value.args_


@pytest.fixture
def linear_args(monkeypatch):
    monkeypatch.setattr(moe_cuda, "_cuda", _any_device)
    monkeypatch.setattr(moe_cuda, "_ext", lambda: Recorder({"nvfp4_linear_cuda_workspace_size"}))
    packed, scales = random_nvfp4(torch.Generator().manual_seed(1), 48, 64)
    w = ref.Nvfp4Weight(packed, scales, torch.tensor(0.01), None)
    with pytest.raises(Captured) as e:
        moe_cuda.nvfp4_linear(torch.zeros(4, 64, dtype=torch.bfloat16), w)
    return e.value.args_


@pytest.fixture
def gdn_kwargs(monkeypatch):
    """The keyword arguments ops/gdn_cuda.gated_delta_net passes to gdn_cuda_chunk_prefill."""
    monkeypatch.setattr(gdn_cuda, "available", lambda: True)
    monkeypatch.setattr(gdn_cuda, "_check", lambda *a, **k: None)
    monkeypatch.setattr(gdn_cuda, "_stream", lambda device: 0)
    monkeypatch.setattr(gdn_cuda, "_C", Recorder({"gdn_cuda_chunk_prefill", "gdn_cuda_recurrent"}))
    T, hk, hv, dk, dv = 5, 1, 2, 64, 32
    bf = dict(dtype=torch.bfloat16)
    need = _C.gdn_cuda_chunk_prefill_workspace_bytes(2, T, hv, dk, dv)
    buf = torch.empty(need + 256, dtype=torch.uint8)
    start = -buf.data_ptr() % 256  # the wrapper wants a 256-byte aligned workspace
    with pytest.raises(Captured) as e:
        gdn_cuda.gated_delta_net(
            torch.zeros(T, hk, dk, **bf), torch.zeros(T, hk, dk, **bf), torch.zeros(T, hv, dv, **bf),
            torch.zeros(T, hv, **bf), torch.zeros(T, hv, **bf), torch.zeros(hv), torch.zeros(hv),
            torch.zeros(3, hv, dk, dv), [0, 1], [0, 3, 5], [False, True], workspace=buf[start:start + need])
    assert e.value.name == "gdn_cuda_chunk_prefill"
    return e.value.args_


@pytest.fixture
def attention_kwargs(monkeypatch):
    """The keyword arguments ops/attention_cuda.gated_attention passes to gated_attention_cuda."""
    monkeypatch.setattr(attention_cuda, "available", lambda: True)
    monkeypatch.setattr(attention_cuda, "_cuda_tensor", lambda *a, **k: None)
    monkeypatch.setattr(attention_cuda, "_stream", lambda device: 0)
    monkeypatch.setattr(attention_cuda, "_C", Recorder({"gated_attention_cuda"}))
    T, nh, nkv, hd, bs = 5, 4, 2, 32, 4
    bf = dict(dtype=torch.bfloat16)
    proj = torch.zeros(T, nh * 2 * hd + 2 * nkv * hd, **bf)  # qg, k, v as column slices of one buffer
    qg, k, v = proj.split([nh * 2 * hd, nkv * hd, nkv * hd], dim=1)
    with pytest.raises(Captured) as e:
        attention_cuda.gated_attention(
            qg, k, v, torch.zeros(hd, **bf), torch.zeros(hd, **bf), torch.zeros(6, 2, nkv, bs, hd, **bf),
            [[0, 1], [2, 3]], [0, 3, 5], [0, 4], num_heads=nh, num_kv_heads=nkv, head_dim=hd, rotary_dim=8,
            rope_theta=1e7, eps=1e-6)
    assert e.value.name == "gated_attention_cuda"
    return e.value.args_


def test_moe_caller_dict_is_accepted(moe_args):
    assert set(moe_args) >= {"gate", "up", "down", "shared_gate", "topk_ids", "backend"}
    assert _C.nvfp4_moe_cuda_workspace_size(moe_args) > 0


def test_moe_misspelt_operand_key(moe_args):
    gate = dict(moe_args["gate"])
    gate["packed_stide"] = gate.pop("packed_stride")
    with pytest.raises(KeyError, match=r"Nvfp4MoE argument 'gate': unknown key 'packed_stide' \(did you mean 'packed_stride'\?\); expected packed, "):
        _C.nvfp4_moe_cuda_workspace_size({**moe_args, "gate": gate})
    # The launcher validates the same way before touching the device.
    with pytest.raises(KeyError, match="unknown key 'packed_stide'"):
        _C.nvfp4_moe_cuda({**moe_args, "gate": gate}, 0, 0, 0)
    with pytest.raises(KeyError, match=r"Nvfp4MoE argument 'shared_down': unknown key 'stide_n'"):
        _C.nvfp4_moe_cuda({**moe_args, "shared_down": {**moe_args["shared_down"], "stide_n": 3}}, 0, 0, 0)


def test_moe_missing_and_unknown_keys(moe_args):
    down = {k: v for k, v in moe_args["down"].items() if k != "row_offset"}
    with pytest.raises(KeyError, match="Nvfp4MoE argument 'down': missing required key 'row_offset'"):
        _C.nvfp4_moe_cuda_workspace_size({**moe_args, "down": down})
    with pytest.raises(KeyError, match="Nvfp4MoE arguments: missing required key 'top_k'"):
        _C.nvfp4_moe_cuda_workspace_size({k: v for k, v in moe_args.items() if k != "top_k"})
    with pytest.raises(KeyError, match=r"Nvfp4MoE arguments: unknown key 'topk' \(did you mean 'top_k'\?\)"):
        _C.nvfp4_moe_cuda_workspace_size({**moe_args, "topk": 2})
    with pytest.raises(KeyError, match="Nvfp4MoE arguments: missing key 'shared_up' .required with shared_intermediate > 0"):
        _C.nvfp4_moe_cuda_workspace_size({k: v for k, v in moe_args.items() if k != "shared_up"})
    no_shared = {k: v for k, v in moe_args.items() if k != "shared_intermediate"}
    with pytest.raises(KeyError, match="key 'shared_gate' needs shared_intermediate > 0"):
        _C.nvfp4_moe_cuda_workspace_size(no_shared)
    # Optional keys: the routing outputs, the backend and input_scale may be left out; None is "absent".
    lean = {k: v for k, v in moe_args.items() if k not in ("topk_ids", "topk_weights", "backend")}
    assert _C.nvfp4_moe_cuda_workspace_size({**lean, "topk_ids": None}) == _C.nvfp4_moe_cuda_workspace_size(moe_args)


def test_moe_bad_values_name_the_key(moe_args):
    with pytest.raises(TypeError, match="Nvfp4MoE arguments: key 'tokens' must be an int in the int32 range, got str"):
        _C.nvfp4_moe_cuda_workspace_size({**moe_args, "tokens": "3"})
    with pytest.raises(TypeError, match="key 'num_experts' must be an int in the int32 range, got int 4294967296"):
        _C.nvfp4_moe_cuda_workspace_size({**moe_args, "num_experts": 2**32})
    with pytest.raises(TypeError, match="Nvfp4MoE argument 'up': key 'packed' must be a non-negative int, got int -1"):
        _C.nvfp4_moe_cuda_workspace_size({**moe_args, "up": {**moe_args["up"], "packed": -1}})
    with pytest.raises(TypeError, match="Nvfp4MoE argument 'gate': expected a dict, got list"):
        _C.nvfp4_moe_cuda_workspace_size({**moe_args, "gate": [1, 2]})
    with pytest.raises(ValueError, match="Nvfp4MoE argument 'gate': key 'layout': expected 'row_major', 'swizzled_128x4' or 'w4a16_fragments', got 'rowmajor'"):
        _C.nvfp4_moe_cuda_workspace_size({**moe_args, "gate": {**moe_args["gate"], "layout": "rowmajor"}})
    with pytest.raises(ValueError, match="Nvfp4MoE arguments: key 'backend': expected 'auto', 'w4a16' or 'native', got 'fast'"):
        _C.nvfp4_moe_cuda_workspace_size({**moe_args, "backend": "fast"})


def test_linear_keys(linear_args):
    assert _C.nvfp4_linear_cuda_workspace_size(linear_args) >= 0
    with pytest.raises(KeyError, match=r"Nvfp4Linear argument 'weight': unknown key 'scale_strde' \(did you mean 'scale_stride'\?\)"):
        _C.nvfp4_linear_cuda_workspace_size({**linear_args, "weight": {**linear_args["weight"], "scale_strde": 0}})
    with pytest.raises(KeyError, match="Nvfp4Linear arguments: unknown key 'rws'"):
        _C.nvfp4_linear_cuda({**linear_args, "rws": 4}, 0, 0, 0)
    with pytest.raises(KeyError, match="Nvfp4Linear arguments: missing required key 'weight'"):
        _C.nvfp4_linear_cuda({k: v for k, v in linear_args.items() if k != "weight"}, 0, 0, 0)


def test_gdn_keyword_arguments(gdn_kwargs):
    assert gdn_kwargs["cu_seqlens"] != 0 and gdn_kwargs["workspace"] != 0
    # Everything the caller passes is accepted: with an unaligned workspace the call gets as far as
    # the host-side checks (before any CUDA call).
    with pytest.raises(ValueError, match="workspace: must be a non-null, 256-byte aligned device pointer"):
        _C.gdn_cuda_chunk_prefill(**{**gdn_kwargs, "workspace": gdn_kwargs["workspace"] + 1})
    recurrent = {k: v for k, v in gdn_kwargs.items() if not k.startswith("workspace")}
    with pytest.raises(ValueError, match=r"seqs.batch: must be in \[1, 65535\], got 0"):
        _C.gdn_cuda_recurrent(**{**recurrent, "batch": 0})
    # A misspelt optional argument would have silently turned the prefill into a decode.
    bad = {k: v for k, v in recurrent.items() if k != "cu_seqlens"}
    with pytest.raises(TypeError, match=r"gdn_cuda_recurrent: unknown keyword argument 'cu_seqlen' \(did you mean 'cu_seqlens'\?\); expected q, "):
        _C.gdn_cuda_recurrent(**bad, cu_seqlen=recurrent["cu_seqlens"])
    with pytest.raises(TypeError, match="gdn_cuda_recurrent: unknown keyword argument 'workspace'"):
        _C.gdn_cuda_recurrent(**gdn_kwargs)
    with pytest.raises(TypeError, match="gdn_cuda_chunk_prefill: missing required keyword argument 'workspace_bytes'"):
        _C.gdn_cuda_chunk_prefill(**{k: v for k, v in gdn_kwargs.items() if k != "workspace_bytes"})
    with pytest.raises(TypeError, match="gdn_cuda_recurrent: missing required keyword argument 'o_stride'"):
        _C.gdn_cuda_recurrent(**{k: v for k, v in recurrent.items() if k != "o_stride"})
    with pytest.raises(TypeError, match="gdn_cuda_recurrent: keyword argument 'scale' must be a float, got str"):
        _C.gdn_cuda_recurrent(**{**recurrent, "scale": "0.1"})


def test_attention_keyword_arguments(attention_kwargs):
    kw = attention_kwargs
    assert kw["qg_stride"] == kw["k_stride"] == kw["v_stride"] == 4 * 2 * 32 + 2 * 2 * 32
    assert kw["workspace_bytes"] == _C.gated_attention_workspace_bytes(5, 4, 32) == 5 * 4 * 32 * 2
    assert kw["scale"] == pytest.approx(32**-0.5) and kw["batch"] == 2 and kw["max_blocks_per_seq"] == 2
    # Everything the caller passes is accepted: with one bad value the call gets as far as the
    # launcher's checks (before any CUDA call).
    with pytest.raises(ValueError, match="batch: must be >= 1, got 0"):
        _C.gated_attention_cuda(**{**kw, "batch": 0})
    with pytest.raises(ValueError, match="workspace_bytes: need 1280, got 1279"):
        _C.gated_attention_cuda(**{**kw, "workspace_bytes": 1279})
    with pytest.raises(ValueError, match="workspace: must be a non-null, 16-byte aligned device pointer"):
        _C.gated_attention_cuda(**{**kw, "workspace": 0})
    with pytest.raises(TypeError, match=r"gated_attention_cuda: unknown keyword argument 'context_len' \(did you mean 'context_lens'\?\); expected qg, "):
        _C.gated_attention_cuda(**{k: v for k, v in kw.items() if k != "context_lens"}, context_len=kw["context_lens"])
    with pytest.raises(TypeError, match="gated_attention_cuda: missing required keyword argument 'max_blocks_per_seq'"):
        _C.gated_attention_cuda(**{k: v for k, v in kw.items() if k != "max_blocks_per_seq"})
    with pytest.raises(TypeError, match="gated_attention_cuda: keyword argument 'rope_theta' must be a float, got str"):
        _C.gated_attention_cuda(**{**kw, "rope_theta": "1e7"})
    with pytest.raises(TypeError, match="gated_attention_cuda: keyword argument 'block_size' must be an int in the int32 range"):
        _C.gated_attention_cuda(**{**kw, "block_size": 2**31})
    assert _C.gated_attention_workspace_bytes(1, 1, 32) == 256  # rounded up to 256 bytes


def test_conv1d_keyword_arguments():
    # Declared keyword arguments: pybind11 itself refuses the misspelt one.
    with pytest.raises(TypeError, match="incompatible function arguments"):
        _C.gdn_cuda_causal_conv1d(x=0, x_stride=8, weight=0, state_pool=0, y=0, y_stride=8, channels=8, width=4, slots=0,
                                  cu_seqlens=0, has_initial_state=0, batch=1, tokens=1, num_slot=1)


def test_dequantize_checks_arguments_before_the_device():
    with pytest.raises(ValueError, match="scales: expected dtype uint8"):
        _C.nvfp4_dequantize_bf16_cuda(np.zeros((2, 8), np.uint8), np.zeros((2, 1), np.float32), 1.0)
    with pytest.raises(ValueError, match=r"scales: expected shape \(2, 1\)"):
        _C.nvfp4_dequantize_bf16_cuda(np.zeros((2, 8), np.uint8), np.zeros((2, 2), np.uint8), 1.0)


def test_reference_shared_expert_keys():
    c = Case(2, 3, 4, 2, 32, 16)
    kw = dict(hidden=np.zeros((3, 32), np.uint16), router_logits=np.zeros((3, 4), np.float32), top_k=2,
              gate_up_weight=c.experts.gate_up.weight.numpy(), gate_up_scales=c.experts.gate_up.weight_scale.view(torch.uint8).numpy(),
              gate_up_scale_2=c.experts.gate_up.weight_scale_2.float().numpy(), down_weight=c.experts.down.weight.numpy(),
              down_scales=c.experts.down.weight_scale.view(torch.uint8).numpy(), down_scale_2=c.experts.down.weight_scale_2.float().numpy())
    lin = (np.zeros((16, 16), np.uint8), np.full((16, 2), 0x38, np.uint8), 1.0, None)
    shared = {"gate": lin, "up": lin, "down": (np.zeros((32, 8), np.uint8), np.full((32, 1), 0x38, np.uint8), 1.0, None),
              "gate_weight": np.zeros(32, np.uint16)}
    assert _C.nvfp4_moe_ref(**kw, shared=shared).shape == (3, 32)
    with pytest.raises(KeyError, match=r"nvfp4_moe_ref argument 'shared': unknown key 'gate_weights' \(did you mean 'gate_weight'\?\)"):
        _C.nvfp4_moe_ref(**kw, shared={**shared, "gate_weights": shared["gate_weight"]})
    with pytest.raises(KeyError, match="nvfp4_moe_ref argument 'shared': missing required key 'down'"):
        _C.nvfp4_moe_ref(**kw, shared={k: v for k, v in shared.items() if k != "down"})


def test_chunked_prefill_falls_back_where_its_shared_memory_does_not_fit():
    """Runs without a GPU (the decision only): a device whose per-block limit is below what the
    chunked prefill needs makes 'auto' take the recurrent kernel. Since the state pass keeps only
    -W, the keys, U, S and V' in shared memory, head_k_dim 128 fits RTX Blackwell (sm_120/121: 99 KiB)."""
    from qwen35_trt import _C
    from qwen35_trt.ops.gdn_cuda import chunked_prefill_fits

    if not _C.build_info().get("cuda_enabled"):
        pytest.skip("_C built without CUDA")
    need128 = _C.gdn_cuda_chunk_prefill_shared_bytes(128)
    assert 65536 < need128 <= 101376
    assert chunked_prefill_fits(128, None, optin_bytes=101376) == (True, need128, 101376)  # sm_120
    assert chunked_prefill_fits(128, None, optin_bytes=65536) == (False, need128, 65536)
    assert chunked_prefill_fits(128, None, optin_bytes=232448)[0]  # sm_90 / sm_100: 227 KiB
    assert chunked_prefill_fits(64, None, optin_bytes=101376)[0]
    assert chunked_prefill_fits(96, None, optin_bytes=232448) == (False, 0, 232448)
