"""The small value types of the store interface: what a conditional write found, an entry as
read back, an owner's job index."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class Found(Enum):
    """What a conditional write found: no entry, or one with or without a cancel request."""

    MISSING = "missing"
    PRESENT = "present"
    CANCEL_REQUESTED = "cancel-requested"

    @classmethod
    def of(cls, flag: bool | None) -> Found:
        """From a backend's ``None`` (missing) / cancel flag."""
        if flag is None:
            return cls.MISSING
        return cls.CANCEL_REQUESTED if flag else cls.PRESENT


@dataclass(frozen=True)
class Claims:
    """An owner's job index: the unfinished ids (what a quota counts) and the recent ones."""

    active: set[str]
    #: Newest first: every active id plus the newest finished ones.
    recent: list[str]


@dataclass(frozen=True)
class Entry:
    """One stored entry as read back: the document and whether a cancel was requested."""

    data: dict[str, Any]
    cancel_requested: bool
