"""Job tokens (itsdangerous) and the binding of job ids to the user's session.

A token is the job id signed with the app's ``SECRET_KEY`` and our salt; it
proves the id was issued by this app and nothing more. Seeing a job also
requires its id to be in the requesting session, so a token replayed from
another browser session is refused like garbage.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from typing import Any

from itsdangerous import BadData, URLSafeTimedSerializer

from .errors import InvalidToken
from .records import UNFINISHED

SALT = "flask-asyncstate.job"
#: Session key holding this session's job ids, newest first.
SESSION_KEY = "_asyncstate_jobs"


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


def session_job_ids(session: MutableMapping[str, Any]) -> list[str]:
    ids = session.get(SESSION_KEY)
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def bind(
    session: MutableMapping[str, Any],
    job_id: str,
    known: list[tuple[str, dict[str, Any] | None]],
    limit: int,
) -> None:
    """Record ``job_id`` first in the session's list.

    ``known`` pairs the session's current ids with their documents (read once
    by the caller for the quota check). Unfinished jobs stay; of the others
    only the ``limit`` newest do. An id whose document is missing counts as
    finished rather than being dropped at once: after a Redis restart a running
    job writes its document again.
    """
    kept: list[str] = []
    finished = 0
    for job, doc in known:
        if doc is None or doc["status"] not in UNFINISHED:
            finished += 1
            if finished > limit:
                continue
        kept.append(job)
    session[SESSION_KEY] = [job_id, *kept]


def owns(session: MutableMapping[str, Any], job_id: str) -> bool:
    return job_id in session_job_ids(session)
