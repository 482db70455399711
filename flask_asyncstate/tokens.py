"""Job tokens (itsdangerous) and the binding of job ids to the user's session.

A token is the job id signed with the app's ``SECRET_KEY`` and our salt; it
proves the id was issued by this app and nothing more. Seeing a job also
requires the job's owner to be the requesting session's (and user's), so a
token replayed from another browser session is refused like garbage.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

from flask import current_app, session
from itsdangerous import BadData, URLSafeTimedSerializer

from .errors import InvalidToken

SALT = "flask-asyncstate.job"
#: Session key holding the base of this session's owner id (see :func:`session_owner`).
OWNER_KEY = "_asyncstate_owner"


class TokenSigner:
    """Sign job ids into URL-safe tokens and check them back.

    Keys are read from the app's config at each use, so ``SECRET_KEY`` may be
    set after ``init_app``; ``SECRET_KEY_FALLBACKS`` still verify (key rotation).
    """

    def __init__(self, config: Mapping[str, Any], max_age: float | None) -> None:
        self._config = config
        self.max_age = max_age
        # (keys, serializer, verified): a page polls with the same token every second, so
        # tokens already verified with these keys (token -> (job id, signed at)) cost a dict
        # lookup instead of an HMAC. The memo lives and dies with the keys that verified it.
        self._cached: (
            tuple[tuple[Any, ...], URLSafeTimedSerializer, dict[str, tuple[str, float]]] | None
        ) = None

    def _current(
        self,
    ) -> tuple[URLSafeTimedSerializer, dict[str, tuple[str, float]]]:
        """The serializer for the configured keys, and the memo of tokens it verified."""
        key = self._config.get("SECRET_KEY")
        if not key:
            raise RuntimeError(
                "flask-asyncstate signs job tokens with SECRET_KEY: set app.config['SECRET_KEY']"
            )
        keys = (*(self._config.get("SECRET_KEY_FALLBACKS") or ()), key)  # the last one signs
        cached = self._cached
        if cached is None or cached[0] != keys:  # new keys, new memo: old verdicts don't count
            cached = self._cached = (keys, URLSafeTimedSerializer(list(keys), salt=SALT), {})
        return cached[1], cached[2]

    def require_key(self) -> None:
        """Raise the missing-``SECRET_KEY`` error now, before anything is created."""
        self._current()

    def sign(self, job_id: str) -> str:
        return self._current()[0].dumps(job_id)

    def unsign(self, token: str) -> str:
        """The job id inside ``token``; :class:`InvalidToken` if it is bad in any way."""
        if not isinstance(token, str) or len(token) > 512:
            raise InvalidToken("malformed job token")
        serializer, verified = self._current()
        known = verified.get(token)
        if known is not None:
            if self.max_age is None or time.time() - known[1] <= self.max_age:
                return known[0]
            raise InvalidToken("invalid or expired job token")
        try:
            max_age = None if self.max_age is None else int(self.max_age)
            job_id, signed_at = serializer.loads(token, max_age=max_age, return_timestamp=True)
        except BadData as exc:
            raise InvalidToken("invalid or expired job token") from exc
        if not isinstance(job_id, str):
            raise InvalidToken("malformed job token")
        if len(verified) >= 4096:
            verified.clear()
        verified[token] = (job_id, signed_at.timestamp())
        return job_id


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
