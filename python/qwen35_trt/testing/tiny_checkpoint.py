"""Real ModelOpt NVFP4 checkpoints of tiny Qwen3.5 MoE models, made on the CPU in seconds.

A random ``Qwen3_5MoeForCausalLM`` (transformers) is built from a small config that keeps the
real model's ratios (2:1 value:key GDN heads, gated q, partial RoPE, shared expert, every 4th
layer full attention), calibrated and quantized with ModelOpt's own ``NVFP4_DEFAULT_CFG`` and
exported with ``export_hf_checkpoint``: the same code path that makes the real releases. A tiny
byte-level BPE tokenizer trained on a text shipped with the package completes the checkpoint.

Needs the ``fixtures`` extra (transformers, nvidia-modelopt, tokenizers).
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

# Each variant: config overrides on top of TINY_BASE, and whether ModelOpt also quantizes
# linear_attn.in_proj_a / in_proj_b (as the AxionML 35B release does; the default config keeps
# them BF16).
TINY_BASE: dict[str, Any] = dict(
    vocab_size=512,
    hidden_size=128,
    num_hidden_layers=4,
    layer_types=["linear_attention", "linear_attention", "linear_attention", "full_attention"],
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_key_head_dim=32,
    linear_value_head_dim=32,
    linear_conv_kernel_dim=4,
    num_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=32,
    shared_expert_intermediate_size=32,
    max_position_embeddings=4096,
    rms_norm_eps=1e-6,
    rope_parameters={"rope_type": "default", "rope_theta": 1e7, "partial_rotary_factor": 0.25, "mrope_section": [2, 1, 1]},
)

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {"overrides": {}, "quantize_in_proj_ab": False},
    "nvfp4_ab": {"overrides": {}, "quantize_in_proj_ab": True},
    # Other sizes everywhere, so that nothing can silently depend on the default's numbers:
    # 3:1 grouped attention with 64-dim heads (GatedAttention takes multiples of 32, as every
    # Qwen3.5 model's 256), half of them rotary, 3 key / 6 value GDN heads of 16 / 24 dims,
    # 6 experts top-3, wider experts than the shared one, attention first, 5 layers.
    "wide": {
        "overrides": dict(
            vocab_size=384,
            hidden_size=96,
            num_hidden_layers=5,
            layer_types=["full_attention", "linear_attention", "linear_attention", "full_attention", "linear_attention"],
            num_attention_heads=6,
            num_key_value_heads=2,
            head_dim=64,
            linear_num_key_heads=3,
            linear_num_value_heads=6,
            linear_key_head_dim=16,
            linear_value_head_dim=24,
            linear_conv_kernel_dim=3,
            num_experts=6,
            num_experts_per_tok=3,
            moe_intermediate_size=48,
            shared_expert_intermediate_size=64,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5, "mrope_section": [8, 4, 4]},
        ),
        "quantize_in_proj_ab": False,
    },
}

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = Path(__file__).with_name("data") / "tiny_corpus.txt"


def tiny_config_dict(variant: str = "default") -> dict[str, Any]:
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    cfg = copy.deepcopy(TINY_BASE)
    cfg.update(copy.deepcopy(VARIANTS[variant]["overrides"]))
    return cfg


def train_tokenizer(vocab_size: int):
    """A byte-level BPE tokenizer (tokenizers library) trained on the shipped corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(CORPUS)], trainer)
    return tok


def make_tiny_checkpoint(
    out_dir: str | Path,
    variant: str = "default",
    seed: int = 0,
    original_path: str | Path | None = None,
) -> Path:
    """Write a ModelOpt NVFP4 export of a random tiny model to ``out_dir`` and return it.

    ``original_path``, when given, receives the model's BF16 weights before quantization
    (transformers state-dict names) so tests can re-quantize them and compare byte for byte.
    """
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen3_5MoeForCausalLM, Qwen3_5MoeTextConfig

    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_hf_checkpoint

    out = Path(out_dir)
    cfg_dict = tiny_config_dict(variant)
    tokenizer = train_tokenizer(cfg_dict["vocab_size"])
    eos = tokenizer.token_to_id("<|endoftext|>")
    cfg = Qwen3_5MoeTextConfig(**cfg_dict, eos_token_id=eos, bos_token_id=None, pad_token_id=eos)

    torch.manual_seed(seed)
    # _from_config with a dtype keeps RoPE's inv_freq in fp32, as loading a real release does.
    model = Qwen3_5MoeForCausalLM._from_config(cfg, dtype=torch.bfloat16).eval()
    # ModelOpt's export reads the architecture name and fails without it.
    model.config.architectures = ["Qwen3_5MoeForCausalLM"]
    if original_path is not None:
        from safetensors.torch import save_file

        Path(original_path).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(original_path))

    quant_cfg = copy.deepcopy(mtq.NVFP4_DEFAULT_CFG)
    if VARIANTS[variant]["quantize_in_proj_ab"]:
        quant_cfg["quant_cfg"] = [
            e for e in quant_cfg["quant_cfg"]
            if not (isinstance(e, dict) and str(e.get("quantizer_name", "")).startswith("*linear_attn.in_proj_"))
        ]

    gen = torch.Generator().manual_seed(seed + 1)
    calib = [torch.randint(0, cfg.vocab_size, (2, 48), generator=gen) for _ in range(4)]

    def forward_loop(m):
        with torch.no_grad():
            for ids in calib:
                m(ids)

    mtq.quantize(model, quant_cfg, forward_loop)
    if out.exists():
        shutil.rmtree(out)
    export_hf_checkpoint(model, export_dir=str(out))
    PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=cfg.max_position_embeddings,
    ).save_pretrained(str(out))
    (out / "qwen35_trt_fixture.json").write_text(json.dumps({"variant": variant, "seed": seed}) + "\n")
    return out
