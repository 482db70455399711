"""Who owns a job: the logged-in user, else the browser session, or what the app's owner
loader names.

A job started in a request names its owner in its document; the routes show or cancel
it only to requests of that owner, and an owner's jobs are one quota and one list, on
every device of a user. Named owners (users, an owner loader's ids) and sessions are
digested apart (``owner|<id>`` vs a random per-session base kept in the session under
:data:`OWNER_KEY`), so no session can ever share an owner id with a user. A logout
gives the session a fresh base: the next user of that browser sees none of the
previous user's jobs, which stay theirs.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, MutableMapping
from typing import Any

from flask import current_app, session

#: Session key holding the base of this session's owner id (see :func:`session_owner`).
OWNER_KEY = "_asyncstate_owner"


def session_owner(session: MutableMapping[str, Any], *, create: bool) -> str | None:
    """The owner id of the jobs this browser session owns (no user, or an ``owner_loader``
    that answered None).

    Its base is a random value kept in the session under :data:`OWNER_KEY`. Every
    session the app saves gets one (see :func:`stamp`), so the simultaneous starts
    of a browser that already has a session agree on it; ``session.clear()`` drops
    it (and so does a Flask-Login logout), so whoever uses the browser next is
    someone new. None: this session has no owner yet (and so no jobs).
    """
    base = session.get(OWNER_KEY)
    if not isinstance(base, str) or not base:
        if not create:
            return None
        base = session[OWNER_KEY] = secrets.token_hex(16)
    return _digest(f"{base}|")


def stamp(session: MutableMapping[str, Any]) -> None:
    """Give a session that is about to be saved an owner base if it has none."""
    if session and OWNER_KEY not in session:
        session[OWNER_KEY] = secrets.token_hex(16)


def request_owner(owner_of: Callable[[], Any] | None = None, *, create: bool) -> str | None:
    """The owner id of the current request: what ``owner_of`` (the ``owner_loader``, or by
    default the Flask-Login user) names, else the session's (see :func:`session_owner`).

    Named owners and sessions are digested apart (``owner|<id>`` vs a random base), so
    no session can ever share an owner id with a user.
    """
    named = (owner_of or login_user_id)()
    if named is None:
        return session_owner(session, create=create)
    if isinstance(named, bool) or not isinstance(named, (str, int)):
        raise TypeError(
            f"the owner_loader must return a str, an int or None, got {type(named).__name__}"
        )
    if named == "":  # one id shared by everyone it is returned for: no owner at all
        raise ValueError(
            "the owner_loader returned an empty owner id; return None for no named owner"
            " (the session then owns the job)"
        )
    return _digest(f"owner|{named}")


def login_user_id() -> str | None:
    """The logged-in user's id when Flask-Login is set up on the current app, else None."""
    if getattr(current_app, "login_manager", None) is None:
        return None
    from flask_login import current_user

    if not current_user or not current_user.is_authenticated:
        return None
    user_id = current_user.get_id()
    return None if user_id is None else str(user_id)


def forget_owner(session: MutableMapping[str, Any]) -> None:
    """A user logged out: anonymous jobs started from now on in this session belong to a new
    owner (the user's own jobs stay theirs, found again when they log back in)."""
    session[OWNER_KEY] = secrets.token_hex(16)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16, person=b"asyncstate").hexdigest()
