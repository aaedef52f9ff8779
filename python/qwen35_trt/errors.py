"""Typed errors. The CLI maps ``UserInputError`` to exit code 2 and anything else to 1."""


class UserInputError(Exception):
    """The user's input (checkpoint, path, option) is wrong; the message says what and where."""


class CheckpointError(UserInputError):
    """A checkpoint file, tensor or config field is missing or malformed."""


class UnsupportedError(UserInputError):
    """The input is well-formed but uses a feature this version does not support yet."""
