"""Passwords (argon2), bearer session tokens (HS256 JWT) that can be revoked, and an in-process limiter.

Failures answer the same way whether or not the user exists, so the API does not reveal who is registered.

A token alone is not enough: every request looks the user up (:class:`SessionCheck`). The user must still
exist, the token's ``gen`` must equal the user's ``session_epoch`` (a password change bumps it, so every
earlier token dies), its ``jti`` must not be in ``revoked_tokens`` (logout), and the role is the one in the
database, not the one in the token. The user lookup is cached ``USER_CACHE_SECONDS`` (5 s) per process: a
demoted operator (or a deleted user, or a password changed in another API process) keeps access at most
that long; logout and a password change in the same process take effect at once, and the revocation list
is read on every request.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

if TYPE_CHECKING:
    from autotrade.store.db import Database

ISSUER = "autotrade-api"
USER_CACHE_SECONDS = 5.0
_hasher = PasswordHasher()
# Verifying against a dummy hash when the user is unknown keeps the timing the same as a wrong password.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    role: str
    jti: str = ""
    expires_at: datetime | None = None
    epoch: int = 0  # the user's session_epoch when the token was issued

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


class SessionTokens:
    def __init__(self, key: bytes, ttl: timedelta = timedelta(hours=1)) -> None:
        self._key = key
        self._ttl = ttl

    def issue(self, principal: Principal, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        claims = {
            "sub": principal.user_id, "role": principal.role, "iss": ISSUER, "iat": now,
            "exp": now + self._ttl, "jti": uuid.uuid4().hex, "typ": "session", "gen": principal.epoch,
        }  # fmt: skip
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: str) -> Principal | None:
        try:
            claims = jwt.decode(
                token, self._key, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "sub"]}
            )
        except jwt.PyJWTError:
            return None
        if claims.get("typ") != "session" or not isinstance(claims.get("gen", 0), int):
            return None
        return Principal(
            str(claims["sub"]), str(claims.get("role", "user")), jti=str(claims.get("jti", "")),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC), epoch=int(claims.get("gen", 0)),
        )  # fmt: skip


class SessionCheck:
    """The per-request check of a verified token against the database (see the module's docstring)."""

    def __init__(
        self, db: Database, cache_seconds: float = USER_CACHE_SECONDS, max_users: int = 10_000
    ) -> None:
        self.db = db
        self.cache_seconds = cache_seconds
        self.max_users = max_users
        self._users: OrderedDict[str, tuple[float, str, int] | tuple[float, None, None]] = OrderedDict()
        self._lock = threading.Lock()

    def current(self, token: Principal) -> Principal | None:
        """The principal with the user's current role, or None when the session no longer holds."""
        import sqlalchemy as sa

        from autotrade.store.models import RevokedToken, User

        now = time.monotonic()
        with self._lock:
            cached = self._users.get(token.user_id)
        if cached is None or now - cached[0] >= self.cache_seconds:
            with self.db.unit_of_work() as s:
                row = s.execute(
                    sa.select(User.role, User.session_epoch).where(User.user_id == token.user_id)
                ).first()
            cached = (now, row[0], int(row[1])) if row is not None else (now, None, None)
            with self._lock:
                self._users[token.user_id] = cached
                self._users.move_to_end(token.user_id)
                while len(self._users) > self.max_users:
                    self._users.popitem(last=False)
        _, role, epoch = cached
        if role is None or epoch != token.epoch:
            return None
        if token.jti:
            with self.db.unit_of_work() as s:
                if s.get(RevokedToken, token.jti) is not None:
                    return None
        return Principal(token.user_id, role, jti=token.jti, expires_at=token.expires_at, epoch=token.epoch)

    def forget(self, user_id: str) -> None:
        """Drop the cached user (after a change made by this process: a password, a role)."""
        with self._lock:
            self._users.pop(user_id, None)

    def revoke(self, token: Principal, reason: str = "logout") -> None:
        """Revoke one token until its expiry (every API process reads the same table)."""
        from autotrade.store.models import RevokedToken

        if not token.jti:
            return
        with self.db.unit_of_work() as s:
            if s.get(RevokedToken, token.jti) is None:
                s.add(RevokedToken(jti=token.jti, user_id=token.user_id, reason=reason,
                                   expires_at=token.expires_at or datetime.now(UTC)))  # fmt: skip


class RateLimiter:
    """At most ``limit`` attempts per ``window`` seconds per key, in this process (key registrations of a
    signed-in user; logins and sign-ups use the shared :class:`autotrade.api.limits.LoginLimits`). At most
    ``max_keys`` keys are remembered: the least recently used goes first."""

    def __init__(self, limit: int, window: float, max_keys: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str, now: float | None = None) -> bool:
        t = time.monotonic() if now is None else now
        hits = self._hits.setdefault(key, deque())
        self._hits.move_to_end(key)
        while len(self._hits) > self.max_keys:
            self._hits.popitem(last=False)
        while hits and hits[0] <= t - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(t)
        return True
