"""The typed state API, modelled on Smartstore's ``IAsyncState``: entries keyed by type + name.

``asyncstate.state`` is an instance of :class:`StateAPI`. State objects are
dataclasses, dicts, or types with ``to_dict()``/``from_dict()`` hooks (see
:mod:`flask_asyncstate.serialization`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from . import serialization
from .stores.base import Store

T = TypeVar("T")


class StateAPI:
    """Create, update, read, cancel and remove typed state entries in a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def key(self, tp: type, name: str | None = None) -> str:
        """The store key of the entry ``tp`` + ``name``."""
        return self._key(tp, name)

    def _key(self, tp: type, name: str | None) -> str:
        if not isinstance(tp, type):
            raise TypeError(f"expected a state type, got {tp!r}; pass the class, e.g. ImportState")
        return self.store.key(serialization.type_key(tp), name)

    def create(
        self,
        obj: Any,
        name: str | None = None,
        cancel_event: threading.Event | None = None,
        never_expires: bool = False,
    ) -> None:
        """Add or replace the entry for ``type(obj)`` + ``name``.

        ``cancel_event`` is set by :meth:`cancel` from any process sharing the store.
        Raises ``TypeError`` (naming the field) if ``obj`` would not round-trip.
        """
        document = serialization.to_document(obj)
        self.store.create(
            self._key(type(obj), name),
            document,
            cancel_event=cancel_event,
            never_expires=never_expires,
        )

    def update(self, tp: type[T], fn: Callable[[T], T | None], name: str | None = None) -> bool:
        """Apply ``fn`` to the freshest value atomically; False when there is no entry.

        ``fn`` may mutate its argument and return None, or return a new object.
        It is retried on a concurrent write, so keep it free of side effects.
        """

        def apply(document: dict[str, Any]) -> dict[str, Any]:
            obj = serialization.from_document(tp, document)
            result = fn(obj)
            return serialization.to_document(obj if result is None else result)

        return self.store.update(self._key(tp, name), apply)

    def get(self, tp: type[T], name: str | None = None) -> T | None:
        """The entry's current value, or None; reading restarts its expiry."""
        entry = self.store.read(self._key(tp, name))
        return None if entry is None else serialization.from_document(tp, entry.data)

    def contains(self, tp: type, name: str | None = None) -> bool:
        """Whether the entry exists; does not count as use."""
        return self.store.exists(self._key(tp, name))

    def get_all(self, tp: type[T]) -> list[T]:
        """Every live entry of ``tp``, whatever its name (a scan: meant for admin views)."""
        keys = self.store.keys(serialization.type_key(tp))
        entries = self.store.read_many(keys)
        return [serialization.from_document(tp, e.data) for e in entries if e is not None]

    def cancel(self, tp: type, name: str | None = None) -> bool:
        """Request cancellation; True only when the entry exists. Sets its Event wherever held."""
        return self.store.cancel(self._key(tp, name))

    def is_cancelled(self, tp: type, name: str | None = None) -> bool:
        """Whether a cancel was requested for the entry (False when it does not exist)."""
        entry = self.store.read(self._key(tp, name))
        return bool(entry and entry.cancel_requested)

    def remove(self, tp: type, name: str | None = None) -> bool:
        """Delete the entry and release its local Event; True if there was one."""
        return self.store.remove(self._key(tp, name))
