"""Temporary tokens: short-lived JWTs scoped to one user, one account, some actions and a spending cap.

Flows and tasks carry these, never secrets. Revocation is by token id (jti), stored in the database so
every gateway process sees it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
import sqlalchemy as sa

from autotrade.store.db import Database
from autotrade.store.models import RevokedToken

ISSUER = "autotrade-vault"
AUDIENCE = "autotrade-broker-gateway"
ACTIONS = frozenset({"account:read", "order:buy", "order:sell", "order:cancel"})


class TokenRejected(Exception):
    """A temporary token that is invalid, expired, revoked or out of scope (message safe to log)."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    jti: str
    user_id: str
    account_no: str
    actions: frozenset[str]
    spend_cap: int | None
    expires_at: datetime
    key_version: int | None = None  # the user's key as it was when the token was issued


class TemporaryTokens:
    def __init__(self, db: Database, signing_key: bytes, ttl: timedelta = timedelta(minutes=5)) -> None:
        self._db = db
        self._key = signing_key
        self.ttl = ttl

    def __repr__(self) -> str:
        return f"TemporaryTokens(ttl={self.ttl})"

    def issue(
        self,
        user_id: str,
        account_no: str,
        actions: frozenset[str] | set[str],
        spend_cap: int | None = None,
        now: datetime | None = None,
        key_version: int | None = None,
    ) -> str:
        unknown = set(actions) - ACTIONS
        if unknown:
            raise ValueError(f"unknown actions: {sorted(unknown)}")
        now = now or datetime.now(UTC)
        claims = {
            "iss": ISSUER, "aud": AUDIENCE, "sub": user_id, "acct": account_no, "act": sorted(actions),
            "cap": spend_cap, "jti": uuid.uuid4().hex, "iat": now, "exp": now + self.ttl,
        }  # fmt: skip
        if key_version is not None:
            claims["kv"] = key_version
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: str, now: datetime | None = None, *, check_revoked: bool = True) -> TokenClaims:
        """The token's claims if its signature, audience, issuer and expiry hold and (unless the caller
        checks it itself, as the gateway's admission does) it was not revoked."""
        try:
            claims = jwt.decode(
                token, self._key, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER,
                options={
                    "require": ["exp", "sub", "jti", "acct"],
                    # With an explicit clock (the simulator's virtual one) time checks are done below.
                    "verify_exp": now is None,
                    "verify_iat": now is None,
                },
            )  # fmt: skip
        except jwt.ExpiredSignatureError:
            raise TokenRejected("temporary token expired") from None
        except jwt.PyJWTError:
            raise TokenRejected("temporary token invalid") from None
        expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
        if now is not None and now >= expires_at:
            raise TokenRejected("temporary token expired")
        if check_revoked and self.is_revoked(str(claims["jti"])):
            raise TokenRejected("temporary token revoked")
        cap = claims.get("cap")
        return TokenClaims(
            jti=str(claims["jti"]), user_id=str(claims["sub"]), account_no=str(claims["acct"]),
            actions=frozenset(claims.get("act") or ()), spend_cap=int(cap) if cap is not None else None,
            expires_at=expires_at, key_version=int(claims["kv"]) if claims.get("kv") is not None else None,
        )  # fmt: skip

    def revoke(self, token_or_jti: str, reason: str = "") -> None:
        jti, user_id, expires_at = token_or_jti, None, datetime.now(UTC) + self.ttl
        if token_or_jti.count(".") == 2:
            claims = jwt.decode(token_or_jti, self._key, algorithms=["HS256"], audience=AUDIENCE,
                                options={"verify_exp": False, "verify_iat": False})  # fmt: skip
            jti, user_id = str(claims["jti"]), str(claims["sub"])
            expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC)
        with self._db.unit_of_work() as s:
            if s.get(RevokedToken, jti) is None:
                s.add(RevokedToken(jti=jti, user_id=user_id, expires_at=expires_at, reason=reason[:128]))

    def is_revoked(self, jti: str) -> bool:
        with self._db.unit_of_work() as s:
            return s.scalar(sa.select(sa.func.count()).where(RevokedToken.jti == jti)) != 0
