"""Turn typed state objects into JSON documents and back, refusing anything that would not round-trip.

Supported: dataclasses (nested dataclasses when the field is annotated with
that dataclass), plain dicts, and any type with a ``to_dict()`` method plus a
``from_dict(data)`` classmethod. Leaves must be JSON-native: ``str``, ``int``,
finite ``float``, ``bool``, ``None``, ``list`` and ``dict`` with ``str`` keys.
A tuple, set, datetime or arbitrary object is refused with
:class:`~flask_asyncstate.errors.UnserializableState` naming the field, because
it would come back as something else (or not at all).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import typing
from typing import Any

from .errors import UnserializableState

_NATIVE = (str, int, bool, type(None))


def type_key(tp: type) -> str:
    """The stable name of a state type: its module plus qualified name."""
    return f"{tp.__module__}.{tp.__qualname__}"


def dumps(document: Any) -> str:
    """Compact, strict JSON (no NaN/Infinity, which other readers cannot parse)."""
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(text: str | bytes) -> Any:
    return json.loads(text)


def _has_hooks(tp: type) -> bool:
    return callable(getattr(tp, "to_dict", None)) and callable(getattr(tp, "from_dict", None))


@functools.lru_cache(maxsize=256)
def _field_types(cls: Any) -> dict[str, Any]:
    """Resolved annotations of a dataclass; falls back to raw ones for local classes."""
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError, AttributeError):  # unresolvable forward refs: use what is there
        return {f.name: f.type for f in dataclasses.fields(cls)}


#: Where a value sits, built while encoding: the root's name, or (parent, suffix). A path
#: is spelled out only when a value is refused, so a deep value costs memory in its depth,
#: not in its depth squared (each level once copying its parent's path would).
_Path = Any


def _spelled(path: _Path) -> str:
    """The text of a path: ``result.rows[0].when``."""
    parts: list[str] = []
    while isinstance(path, tuple):
        path, suffix = path
        parts.append(suffix)
    parts.append(path)
    return "".join(reversed(parts))


def _refuse(at: _Path, value: Any, owner: str, why: str = "") -> UnserializableState:
    path = _spelled(at)
    where = f"field {path!r} of {owner}" if path else owner
    hint = why or (
        "store JSON-native values (str, int, float, bool, None, list, dict with str keys),"
        " or give the type to_dict()/from_dict() hooks"
    )
    return UnserializableState(
        f"{where} has a value of type {type(value).__name__} that cannot be stored: {hint}",
        path,
    )


def encodable_text(text: str) -> bool:
    """Whether ``text`` survives UTF-8 (a lone surrogate, e.g. from bad decoding, does not)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _encode(value: Any, path: _Path, owner: str, annotation: Any = None) -> Any:
    if isinstance(value, str) and not encodable_text(value):
        raise _refuse(path, value, owner, "the text has a lone surrogate, which UTF-8 cannot hold")
    if isinstance(value, _NATIVE):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _refuse(path, value, owner, "NaN and infinity are not valid JSON")
        return value
    if isinstance(value, list):
        return [_encode(v, (path, f"[{i}]"), owner) for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str) or not encodable_text(k):
                raise _refuse(
                    (path, f"[{k!r}]") if path else repr(k),
                    k,
                    owner,
                    "dict keys must be str to survive JSON",
                )
            out[k] = _encode(v, (path, f".{k}") if path else k, owner)
        return out
    if isinstance(value, tuple):
        raise _refuse(path, value, owner, "a tuple would come back as a list; use a list")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        if annotation is type(value):
            return _encode_dataclass(value, path, owner)
        raise _refuse(
            path,
            value,
            owner,
            "a nested dataclass is only stored when the field is annotated with its type",
        )
    raise _refuse(path, value, owner)


def _encode_dataclass(obj: Any, prefix: _Path, owner: str) -> dict[str, Any]:
    types = _field_types(type(obj))  # type: ignore[arg-type]
    out = {}
    for f in dataclasses.fields(obj):
        path = (prefix, f".{f.name}") if prefix else f.name
        out[f.name] = _encode(getattr(obj, f.name), path, owner, types.get(f.name))
    return out


def check_value(value: Any, path: str, owner: str) -> Any:
    """Validate one JSON-native value (e.g. a job result); ``UnserializableState`` names ``path``."""
    return _encode(value, path, owner)


def check_arguments(args: tuple[Any, ...], kwargs: dict[str, Any], owner: str) -> None:
    """Refuse job arguments that are not JSON, whatever the executor (a worker gets JSON),
    with ``UnserializableState`` (a ``TypeError``) naming the argument: ``argument 0``,
    ``argument rows``, ``argument rows[2].when``."""
    named = [(f"argument {i}", v) for i, v in enumerate(args)]
    named += [(f"argument {k}", v) for k, v in kwargs.items()]
    for path, value in named:
        try:
            _encode(value, path, owner)
        except UnserializableState as exc:
            why = str(exc).replace(", or give the type to_dict()/from_dict() hooks", "")
            raise UnserializableState(
                f"job arguments must be JSON, since a worker receives them as JSON: {why}"
                " (pass an id, and load the object in the job)",
                exc.path,
            ) from None


def to_document(obj: Any) -> dict[str, Any]:
    """Validate ``obj`` and return its JSON-ready dict; raise ``UnserializableState`` if it can't."""
    tp = type(obj)
    owner = tp.__qualname__
    if _has_hooks(tp) and not isinstance(obj, dict):
        data = obj.to_dict()
        if not isinstance(data, dict):
            raise UnserializableState(
                f"{owner}.to_dict() returned {type(data).__name__}, not dict", ""
            )
        return _encode(data, "", owner)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _encode_dataclass(obj, "", owner)
    if isinstance(obj, dict):
        return _encode(obj, "", owner)
    raise UnserializableState(
        f"{owner} cannot be used as state: use a dataclass, a dict, or a type with"
        " to_dict()/from_dict() hooks",
        "",
    )


def _decode_dataclass(cls: type, data: dict[str, Any]) -> Any:
    types = _field_types(cls)
    init: dict[str, Any] = {}
    late: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue  # a field added since the entry was written keeps its default
        value = data[f.name]
        ann = types.get(f.name)
        if isinstance(ann, type) and dataclasses.is_dataclass(ann) and isinstance(value, dict):
            value = _decode_dataclass(ann, value)
        (init if f.init else late)[f.name] = value
    obj = cls(**init)
    for name, value in late.items():
        object.__setattr__(obj, name, value)
    return obj


def from_document(tp: type, data: dict[str, Any]) -> Any:
    """Rebuild an instance of ``tp`` from a document made by :func:`to_document`."""
    if _has_hooks(tp) and not issubclass(tp, dict):
        return tp.from_dict(data)  # type: ignore[attr-defined]
    if dataclasses.is_dataclass(tp):
        return _decode_dataclass(tp, data)
    if issubclass(tp, dict):
        return data if tp is dict else tp(data)
    raise TypeError(f"{tp.__qualname__} is not a state type")
