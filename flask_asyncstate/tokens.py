"""Job tokens: the job id signed with the app's ``SECRET_KEY`` and our salt (itsdangerous).

A token proves the id was issued by this app, and when, and nothing more. Seeing a
job also requires the request to come from the job's owner (see
:mod:`flask_asyncstate.owners`), so a token replayed from another browser is refused
like garbage.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from itsdangerous import BadData, URLSafeTimedSerializer

from .errors import InvalidToken

SALT = "flask-asyncstate.job"


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
