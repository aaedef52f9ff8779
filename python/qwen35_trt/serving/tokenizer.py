"""Text in and out: the engine directory's ``tokenizer.json`` and incremental detokenization.

Streaming sends text deltas, token by token. A byte-level BPE token can end in the middle of a
UTF-8 character, so a delta is held back while the decoded text ends in U+FFFD, and decoding works
on a short window of recent tokens (``prefix``..end) rather than the whole output, so a step costs
O(window) however long the sequence is. The deltas always concatenate to ``decode(all tokens)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import UserInputError

REPLACEMENT = "\ufffd"


class TextCodec:
    def __init__(self, tokenizer_json: str | Path):
        from tokenizers import Tokenizer

        path = Path(tokenizer_json)
        if not path.is_file():
            raise UserInputError(f"{path}: missing (the engine directory needs the checkpoint's tokenizer.json)")
        self._tok = Tokenizer.from_file(str(path))
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def token_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas (see the module docstring)."""

    def __init__(self, codec: TextCodec):
        self.codec = codec
        self.ids: list[int] = []
        self.prefix = 0  # start of the decode window
        self.read = 0  # tokens whose text has been emitted
        self.text = ""  # everything emitted so far

    def add(self, token_ids: Sequence[int]) -> str:
        self.ids.extend(token_ids)
        before = self.codec.decode(self.ids[self.prefix : self.read])
        after = self.codec.decode(self.ids[self.prefix :])
        if len(after) <= len(before) or after.endswith(REPLACEMENT):
            return ""  # nothing printable yet (special token or an incomplete character)
        delta = after[len(before) :]
        self.prefix, self.read = self.read, len(self.ids)
        self.text += delta
        return delta

    def flush(self) -> str:
        """The rest at the end of a sequence, incomplete characters included (as U+FFFD)."""
        before = self.codec.decode(self.ids[self.prefix : self.read])
        after = self.codec.decode(self.ids[self.prefix :])
        delta = after[len(before) :] if len(after) > len(before) else ""
        self.prefix = self.read = len(self.ids)
        self.text += delta
        return delta
