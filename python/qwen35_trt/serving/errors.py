"""Errors of the serving runtime: a bad request names the parameter it is about."""

from __future__ import annotations

from ..errors import UserInputError


class RequestError(UserInputError):
    """A request parameter is missing or invalid. ``param`` is the tensor-contract name
    (``text_input``, ``max_tokens``, ``top_p`` ...); the message starts with it."""

    def __init__(self, param: str, message: str):
        self.param = param
        super().__init__(f"{param}: {message}")


class ShuttingDown(RuntimeError):
    """The runtime is stopping and takes no new requests (not the client's fault)."""
