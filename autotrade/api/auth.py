"""Passwords (argon2), bearer session tokens (HS256 JWT) and a login/registration rate limiter.

Failures answer the same way whether or not the user exists, so the API does not reveal who is registered.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ISSUER = "autotrade-api"
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
            "exp": now + self._ttl, "jti": uuid.uuid4().hex, "typ": "session",
        }  # fmt: skip
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: str) -> Principal | None:
        try:
            claims = jwt.decode(
                token, self._key, algorithms=["HS256"], issuer=ISSUER, options={"require": ["exp", "sub"]}
            )
        except jwt.PyJWTError:
            return None
        if claims.get("typ") != "session":
            return None
        return Principal(str(claims["sub"]), str(claims.get("role", "user")))


class RateLimiter:
    """At most ``limit`` attempts per ``window`` seconds per key (client address and account name).

    In-process: with several API processes put a shared limiter (Redis) in front; noted in the README.
    """

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._hits: dict[str, deque[float]] = {}

    def allow(self, key: str, now: float | None = None) -> bool:
        t = time.monotonic() if now is None else now
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= t - self.window:
            hits.popleft()
        if len(hits) >= self.limit:
            return False
        hits.append(t)
        return True
