"""What ``progress()`` accepts: finite numbers JavaScript can show exactly, short UTF-8 text."""

from __future__ import annotations

import math

from .serialization import encodable_text

#: Longest progress message accepted; it is shown beside a bar, not a log.
MAX_MESSAGE_LENGTH = 2000
#: Largest magnitude of ``current``/``total``: integers beyond it lose precision in JavaScript.
MAX_PROGRESS_VALUE = 2**53


def _check_number(value: object, what: str) -> None:
    if value.__class__ is int and -MAX_PROGRESS_VALUE <= value <= MAX_PROGRESS_VALUE:  # type: ignore[operator]
        return  # the common case, first
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"progress {what} must be a number, got {type(value).__name__}")
    if abs(value) > MAX_PROGRESS_VALUE or not math.isfinite(value):  # int first: no overflow
        raise ValueError(f"progress {what} must be finite and at most 2**53 in size, got {value}")


def _check_message(text: object) -> None:
    if not isinstance(text, str):
        raise TypeError(f"progress message must be str, got {type(text).__name__}")
    if len(text) > MAX_MESSAGE_LENGTH:
        raise ValueError(
            f"progress message is {len(text)} characters, more than {MAX_MESSAGE_LENGTH}"
        )
    if not encodable_text(text):
        raise ValueError("progress message has a lone surrogate, which UTF-8 cannot hold")
