"""Runtime limits and per-request generation parameters, with their validation.

Names follow the tensorrtllm_backend ensemble contract (see ``contract.py``), so an error message
names the tensor a client sent. Sampling semantics (documented in docs/serving.md): greedy when
``temperature`` is 0 (the default) or ``top_k`` is 1; otherwise softmax(logits / temperature)
restricted to the ``top_k`` most likely tokens (0 = no limit) and to the smallest set whose
probability reaches ``top_p`` (1 = no limit), drawn with a per-request generator seeded by ``seed``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from .errors import RequestError


@dataclass(frozen=True)
class Limits:
    """Capacity of one runtime.

    max_running: sequences running at once (= executor state slots);
    max_tokens_per_step: tokens fed to the executor in one step (decodes + prefill chunks);
    max_prefill_chunk: prompt tokens of one sequence per step (chunked prefill);
    max_context: prompt + generated tokens of one sequence;
    max_new_tokens: the largest ``max_tokens`` a request may ask for;
    kv_block_size / num_kv_blocks: paged KV accounting of the attention layers (default: enough
    blocks for every slot at full context, so slots are the binding limit).
    """

    max_running: int = 8
    max_tokens_per_step: int = 256
    max_prefill_chunk: int = 64
    max_context: int = 1024
    max_new_tokens: int = 512
    kv_block_size: int = 16
    num_kv_blocks: int = 0  # 0: max_running * ceil(max_context / kv_block_size)

    def __post_init__(self):
        for name in ("max_running", "max_tokens_per_step", "max_prefill_chunk", "max_context", "max_new_tokens", "kv_block_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Limits.{name} must be an integer >= 1, got {v!r}")
        if self.max_tokens_per_step < self.max_running + self.max_prefill_chunk:
            raise ValueError(
                f"Limits.max_tokens_per_step ({self.max_tokens_per_step}) must be >= max_running + max_prefill_chunk "
                f"({self.max_running} + {self.max_prefill_chunk}): every running sequence decodes one token per step "
                "and one whole prompt chunk must still fit"
            )
        if self.num_kv_blocks < 0:
            raise ValueError(f"Limits.num_kv_blocks must be >= 0, got {self.num_kv_blocks}")
        if self.num_kv_blocks and self.num_kv_blocks < self.blocks_for(self.max_context):
            raise ValueError(f"Limits.num_kv_blocks ({self.num_kv_blocks}) cannot hold one sequence of max_context ({self.max_context}) tokens")

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.kv_block_size)

    @property
    def total_kv_blocks(self) -> int:
        return self.num_kv_blocks or self.max_running * self.blocks_for(self.max_context)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, d: dict) -> "Limits":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown limits {sorted(unknown)}")
        return cls(**d)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


@dataclass(eq=False)
class GenerationRequest:
    """One validated request. ``on_event`` receives ``Event``s from the runtime thread."""

    request_id: str
    prompt_ids: list[int]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    end_ids: frozenset[int] = frozenset()
    stop_words: tuple[str, ...] = ()
    min_tokens: int = 0  # end ids are not generated before this many tokens (``min_length``)
    stream: bool = False
    exclude_input_in_output: bool = False
    prompt_text: str = ""
    on_event: Callable[["Event"], None] | None = None


@dataclass
class Event:
    """What the runtime tells a request's owner after a step: new tokens and their text."""

    request_id: str
    token_ids: list[int]
    text: str
    finished: bool = False
    finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
    error: str | None = None


def _scalar(raw: dict, name: str, kind: type, default):
    v = raw.get(name)
    if v is None:
        return default
    if kind is bool:
        if not isinstance(v, bool):
            raise RequestError(name, f"expected a boolean, got {v!r}")
        return v
    if kind is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise RequestError(name, f"expected an integer, got {v!r}")
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise RequestError(name, f"expected a number, got {v!r}")
    if not math.isfinite(v):
        raise RequestError(name, f"expected a finite number, got {v!r}")
    return float(v)


def validate_request(raw: dict, limits: Limits, encode: Callable[[str], list[int]], vocab_size: int, default_end_ids: frozenset[int], request_id: str) -> GenerationRequest:
    """Check the parameters of one request (already converted to Python values) and tokenize its
    prompt. ``raw`` maps contract names to values; raises ``RequestError`` naming the parameter."""
    text = raw.get("text_input")
    if text is None:
        raise RequestError("text_input", "required (the prompt, a UTF-8 string)")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError("text_input", f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if not isinstance(text, str):
        raise RequestError("text_input", f"expected a string, got {type(text).__name__}")
    if not text:
        raise RequestError("text_input", "empty prompt")
    if raw.get("max_tokens") is None:
        raise RequestError("max_tokens", "required (the number of tokens to generate)")
    max_tokens = _scalar(raw, "max_tokens", int, None)
    if not 1 <= max_tokens <= limits.max_new_tokens:
        raise RequestError("max_tokens", f"must be in [1, {limits.max_new_tokens}], got {max_tokens}")
    temperature = _scalar(raw, "temperature", float, 0.0)
    if temperature < 0:
        raise RequestError("temperature", f"must be >= 0 (0 = greedy), got {temperature:g}")
    top_k = _scalar(raw, "top_k", int, 0)
    if top_k < 0:
        raise RequestError("top_k", f"must be >= 0 (0 = no limit), got {top_k}")
    top_p = _scalar(raw, "top_p", float, 1.0)
    if not 0.0 < top_p <= 1.0:
        raise RequestError("top_p", f"must be in (0, 1], got {top_p:g}")
    seed = _scalar(raw, "seed", int, None)
    if seed is not None and not 0 <= seed < 2**64:
        raise RequestError("seed", f"must be in [0, 2^64), got {seed}")
    random_seed = _scalar(raw, "random_seed", int, None)  # the ensemble's name for the seed
    if random_seed is not None:
        if not 0 <= random_seed < 2**64:
            raise RequestError("random_seed", f"must be in [0, 2^64), got {random_seed}")
        if seed is not None and seed != random_seed:
            raise RequestError("random_seed", f"{random_seed} differs from seed {seed} (one is an alias of the other; send one)")
        seed = random_seed
    min_length = _scalar(raw, "min_length", int, 0)
    if min_length < 0:
        raise RequestError("min_length", f"must be >= 0, got {min_length}")
    end_id = _scalar(raw, "end_id", int, None)
    if end_id is not None and not 0 <= end_id < vocab_size:
        raise RequestError("end_id", f"must be a token id in [0, {vocab_size}), got {end_id}")
    rp = _scalar(raw, "repetition_penalty", float, 1.0)
    if rp != 1.0:
        raise RequestError("repetition_penalty", f"not supported yet (only 1.0), got {rp:g}")
    bad = [w for w in (raw.get("bad_words") or []) if w]
    if bad:
        raise RequestError("bad_words", "not supported yet (send none or empty strings)")
    stop = []
    for w in raw.get("stop_words") or []:
        if isinstance(w, bytes):
            try:
                w = w.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError("stop_words", "not valid UTF-8") from None
        if not isinstance(w, str):
            raise RequestError("stop_words", f"expected strings, got {type(w).__name__}")
        if w:
            stop.append(w)
    prompt = encode(text)
    if not prompt:
        raise RequestError("text_input", "the prompt encodes to no tokens")
    if len(prompt) >= limits.max_context:
        raise RequestError("text_input", f"prompt of {len(prompt)} tokens does not fit the context limit of {limits.max_context} tokens (prompt + max_tokens)")
    if len(prompt) + max_tokens > limits.max_context:
        raise RequestError(
            "max_tokens",
            f"prompt ({len(prompt)} tokens) + max_tokens ({max_tokens}) exceeds the context limit of {limits.max_context} tokens; "
            f"ask for at most {limits.max_context - len(prompt)}",
        )
    return GenerationRequest(
        request_id=request_id,
        prompt_ids=prompt,
        max_tokens=max_tokens,
        sampling=SamplingParams(temperature, top_k, top_p, seed),
        end_ids=frozenset([end_id]) if end_id is not None else default_end_ids,
        stop_words=tuple(stop),
        min_tokens=min(min_length, max_tokens),
        stream=_scalar(raw, "stream", bool, False),
        exclude_input_in_output=_scalar(raw, "exclude_input_in_output", bool, False),
        prompt_text=text,
    )
