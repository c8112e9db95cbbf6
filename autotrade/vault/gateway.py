"""The zero-trust broker gateway: the only component that holds broker tokens.

Every request carries a temporary token. The gateway verifies it (signature, expiry, revocation, scope, the
user's key still ACTIVE), re-checks the risk limits of buys (the token's spending cap and the account's daily
limit), runs the security rules graded by what the request does (:mod:`autotrade.vault.anomaly`), writes the
access log (allowed and refused), and only then calls Kiwoom with that user's broker token.

A key DISABLED by the kill switch keeps a sell-only scope, so that the stop-losses the product promised
still fire and reconciliation still runs:

1. reads (session, quotes, balances, order inquiries) are allowed;
2. a sell is allowed for a code in which the product holds an open position (``three_tier_strategies`` not
   closed), for no more shares than it holds there; a cancel or modify for such a code;
3. everything else (buys, any other sell or cancel) is refused;
4. every sell allowed this way is reported to the operator (rule ``sell_only_scope``).

A DELETED key has no data key left (crypto-shredded): nothing can be sent with it.

Broker tokens are cached in memory and, sealed with the gateway's own key, in the database, so that KMS
Decrypt (needed only to issue a broker token) runs about once per user per day even across processes.
Decrypted app keys live only inside the call that issues or revokes a token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from autotrade.broker.client import KiwoomClient
from autotrade.broker.errors import BrokerError, CredentialsError
from autotrade.broker.messages import (
    Credentials,
    Deposit,
    FilledOrder,
    HoldingsReport,
    IssuedToken,
    OrderAck,
    Quote,
    TradeType,
    UnfilledOrder,
)
from autotrade.broker.session import KiwoomSession
from autotrade.domain.krx import KST
from autotrade.domain.models import ApiStatus
from autotrade.ops.worker_metrics import observe_gateway
from autotrade.store.db import Database
from autotrade.store.models import (
    AccessLog,
    BrokerTokenCache,
    RevokedToken,
    SecurityEvent,
    ThreeTierStrategy,
    UserApiKey,
)
from autotrade.trading.ports import ORDER_REF
from autotrade.vault.anomaly import (
    HELD,
    AlertEvent,
    AlertSink,
    AnomalyDetector,
    Finding,
    Grade,
    RequestKind,
    SecurityAlert,
    classify,
)
from autotrade.vault.keys import KeyStore, KeyUnavailable
from autotrade.vault.tokens import TemporaryTokens, TokenClaims, TokenRejected

log = logging.getLogger(__name__)
QUOTE_REUSE = timedelta(seconds=5)  # a buy's reference quote is shared this long
LAST_USED_STEP = timedelta(minutes=1)  # a key's last use is recorded to this precision
ALERT_EVERY = timedelta(minutes=10)  # a RECORD/ALERT/STEP_UP finding of one key, rule, grade, per process
USABLE = (ApiStatus.ACTIVE, ApiStatus.DISABLED)  # DISABLED: the sell-only scope
Clock = Callable[[], datetime]


# The statements every request runs, built once (building and keying them per request cost more than
# running them).
_KEY_OF_TOKEN = (
    UserApiKey.user_id == sa.bindparam("p_user"),
    UserApiKey.account_no == sa.bindparam("p_account"),
)
OUTCOME_UNKNOWN = "outcome unknown"
_BUYS_COUNTED = (  # allowed buys that reached the broker, or may have
    AccessLog.action == "order:buy",
    AccessLog.allowed.is_(True),
    sa.or_(AccessLog.reason.is_(None), AccessLog.reason.startswith(OUTCOME_UNKNOWN)),
)
_SPENT_SINCE = (
    sa.select(sa.func.coalesce(sa.func.sum(AccessLog.amount), 0))
    .where(
        AccessLog.account_no == sa.bindparam("p_account"),
        *_BUYS_COUNTED,
        AccessLog.at >= sa.bindparam("p_since", type_=AccessLog.at.type),
    )
    .scalar_subquery()
)
_SPENT_BY_TOKEN = (  # across every gateway process that saw the token
    sa.select(sa.func.coalesce(sa.func.sum(AccessLog.amount), 0))
    .where(AccessLog.token_id == sa.bindparam("p_jti"), *_BUYS_COUNTED)
    .scalar_subquery()
)


# The security rules' sliding windows, shared by every process: the account's rows of the access log since
# the window's start and since the key's last status change, counted up to one past the rule's threshold
# (all a rule needs to know), so a busy key costs no more than a quiet one (ix_access_log_account_no_at,
# and for the refusals ix_access_log_refused_account_no_at).
_KEY_AGAIN = aliased(UserApiKey)
_CHANGED = (  # not correlated: a derived table cannot see the outer row on every backend
    sa.select(_KEY_AGAIN.status_changed_at)
    .where(_KEY_AGAIN.user_id == sa.bindparam("p_user"), _KEY_AGAIN.account_no == sa.bindparam("p_account"))
    .scalar_subquery()
)
_IN_WINDOW = sa.or_(_CHANGED.is_(None), AccessLog.at > _CHANGED)


def _capped_count(*where: sa.ColumnElement[bool], cap: str) -> sa.ScalarSelect[int]:
    cap_ = sa.bindparam(cap, type_=sa.Integer)  # typed: the batches' set form passes it as an array
    rows = sa.select(sa.literal(1).label("one")).where(*where).limit(cap_).subquery()
    return sa.select(sa.func.count()).select_from(rows).scalar_subquery()


_RECENT = _capped_count(
    AccessLog.account_no == sa.bindparam("p_account"),
    AccessLog.at > sa.bindparam("p_burst_since", type_=AccessLog.at.type),
    _IN_WINDOW,
    cap="p_burst_cap",
)
_FAILURES = _capped_count(  # refusals, except those of a STEP_UP rule
    # "= false", as the partial index ix_access_log_refused_account_no_at says it
    AccessLog.account_no == sa.bindparam("p_account"),
    AccessLog.allowed == sa.false(),
    AccessLog.at > sa.bindparam("p_fail_since", type_=AccessLog.at.type),
    _IN_WINDOW,
    sa.or_(AccessLog.reason.is_(None), ~AccessLog.reason.startswith(HELD)),
    cap="p_fail_cap",
)
_HELD = (  # what the product's open positions hold of the code (a sell's or cancel's)
    sa.select(sa.func.coalesce(sa.func.sum(ThreeTierStrategy.held_quantity), 0))
    .where(
        ThreeTierStrategy.user_id == sa.bindparam("p_user"),
        ThreeTierStrategy.account_no == sa.bindparam("p_account"),
        ThreeTierStrategy.code == sa.bindparam("p_code"),
        ThreeTierStrategy.closed_at.is_(None),
    )
    .scalar_subquery()
)


def _admission(
    spent: sa.ColumnElement[int], by_token: sa.ColumnElement[int], held: sa.ColumnElement[int]
) -> sa.Select[tuple[ApiStatus, int, datetime | None, bool, int, int, int, int, int, int]]:
    return sa.select(
        UserApiKey.api_status, UserApiKey.daily_limit, UserApiKey.last_used_at,
        sa.exists().where(RevokedToken.jti == sa.bindparam("p_jti")), spent, by_token, UserApiKey.key_version,
        _RECENT, _FAILURES, held,
    ).where(*_KEY_OF_TOKEN)  # fmt: skip


_NOTHING = sa.literal(0, sa.Integer)
_ADMIT = _admission(_NOTHING, _NOTHING, _NOTHING)
_ADMIT_BUY = _admission(_SPENT_SINCE, _SPENT_BY_TOKEN, _NOTHING)  # a buy also needs what was bought before it
_ADMIT_ORDER = _admission(_NOTHING, _NOTHING, _HELD)  # a sell, cancel or modify: what the product holds
# The kill switch: only the process that moves the key from ACTIVE tells anyone.
_DISABLE = (
    sa.update(UserApiKey)
    .where(*_KEY_OF_TOKEN, UserApiKey.api_status == ApiStatus.ACTIVE)
    .values(
        api_status=ApiStatus.DISABLED,
        is_auto_trading_enabled=False,
        status_changed_at=sa.bindparam("p_now", type_=UserApiKey.status_changed_at.type),
    )
)
_LOG = sa.insert(AccessLog).returning(AccessLog.id)
# An allowed buy that provably did not reach the broker (refused by the limit check, refused or never
# received by the broker) stops counting against the day's spending; its log entry says why.
# An admitted buy is logged "in flight" (it counts: it may reach the broker) until the broker answers:
# accepted, the mark goes (a success, never superseded); refused or never received, "not placed". A process
# that dies, or a task cancelled, between the admission and the answer leaves the mark: the order protocol's
# proven re-send then supersedes it like any call of unknown outcome, instead of the dead call counting for
# ever beside its re-send (a double count that broke the daily limit and disabled the key).
IN_FLIGHT = f"{OUTCOME_UNKNOWN}: in flight"
_NOT_PLACED = (
    sa.update(AccessLog)
    .where(
        AccessLog.id == sa.bindparam("p_id"),
        sa.or_(AccessLog.reason.is_(None), AccessLog.reason == IN_FLIGHT),
    )
    .values(reason=sa.bindparam("p_reason"))
)
_PLACED = (
    sa.update(AccessLog)
    .where(AccessLog.id == sa.bindparam("p_id"), AccessLog.reason == IN_FLIGHT)
    .values(reason=None)
)
# The order protocol sends an order again only once the broker's inquiries proved the earlier call of
# unknown outcome never arrived: that earlier call stops counting when the re-send is admitted. A call that
# succeeded is never superseded, whatever reference a caller gives.
_SUPERSEDED = (
    sa.update(AccessLog)
    .where(
        AccessLog.order_ref == sa.bindparam("p_ref"),
        AccessLog.action == "order:buy",
        AccessLog.allowed.is_(True),
        AccessLog.reason.startswith(OUTCOME_UNKNOWN),
    )
    .values(reason="not placed: proved not received, sent again")
)
_TOUCH = sa.update(UserApiKey).where(*_KEY_OF_TOKEN).values(last_used_at=sa.bindparam("p_now"))
_KEY_VERSION = sa.select(UserApiKey.key_version).where(*_KEY_OF_TOKEN)
_CACHED_TOKEN = sa.select(BrokerTokenCache.token_sealed, BrokerTokenCache.expires_at).where(
    BrokerTokenCache.key_id == sa.bindparam("p_kid")
)


def _day_start(now: datetime) -> datetime:
    return datetime.combine(now.astimezone(KST).date(), datetime.min.time(), tzinfo=KST)


@dataclass(frozen=True, slots=True)
class Budget:
    """What a buy's admission found: the key's daily limit, the account's buys today before this one, and
    the access-log entry of this request."""

    daily_limit: int | None
    spent_today: int
    spent_by_token: int
    log_id: int


@dataclass(frozen=True, slots=True)
class Admission:
    """What one request's admission found: the key, the budget of a buy, the refusal if any, the findings
    of the security rules and the request's access-log entry."""

    status: ApiStatus | None
    daily_limit: int | None
    spent_today: int
    spent_by_token: int
    refusal: str | None
    findings: list[Finding]
    log_id: int


class AccessDenied(Exception):
    """The gateway refused the request (message safe to show and log)."""


def key_id(user_id: str, account_no: str) -> str:
    return f"{user_id}:{account_no}"


class CachedBrokerTokens:
    """A TokenProvider for one key: memory, then the sealed database cache, then issue (one KMS Decrypt)."""

    def __init__(self, gateway: BrokerGateway, user_id: str, account_no: str) -> None:
        self._g = gateway
        self.user_id = user_id
        self.account_no = account_no
        self.key_id = key_id(user_id, account_no)
        self._token: str | None = None
        self._refresh_at: datetime | None = None
        self._lock = asyncio.Lock()
        self.issued = 0

    def __repr__(self) -> str:
        return f"CachedBrokerTokens(key_id={self.key_id!r})"

    async def token(self) -> str:
        now = self._g.clock()
        if self._token is not None and self._refresh_at is not None and now < self._refresh_at:
            return self._token
        async with self._lock:
            now = self._g.clock()
            if self._token is not None and self._refresh_at is not None and now < self._refresh_at:
                return self._token
            # The database and the KMS are reached off the event loop: thousands of keys open at once.
            db = self._g.db
            cached = await self._g.cached_token(self.key_id, now)
            if cached is not None:
                self._token, self._refresh_at = cached
                return cached[0]
            credentials = await db.run(self._g.usable_credentials, self.user_id, self.account_no)
            try:
                issued = await self._g.client.issue_token(credentials.app_key, credentials.app_secret)
            except CredentialsError:  # a fresh token refused: the key is EXPIRED (registration.py)
                from autotrade.vault.registration import mark_key_refused

                await db.run(mark_key_refused, db, self.user_id, self.account_no, ApiStatus.EXPIRED, now)
                raise
            del credentials
            self.issued += 1
            token, refresh_at = self._keep(issued, now)
            await db.run(self._g.store_cached_token, self.key_id, token, refresh_at)
            return token

    def adopt(self, issued: IssuedToken) -> None:
        """Use a token issued elsewhere (registration) so the first use needs no decrypt."""
        token, refresh_at = self._keep(issued, self._g.clock())
        self._g.store_cached_token(self.key_id, token, refresh_at)

    def _keep(self, issued: IssuedToken, now: datetime) -> tuple[str, datetime]:
        lifetime = issued.expires_at - now
        margin = min(timedelta(minutes=10), lifetime / 2)
        self._token = token = issued.token.get_secret_value()
        self._refresh_at = refresh_at = issued.expires_at - margin
        return token, refresh_at

    async def invalidate(self, token: str) -> None:
        if self._token == token:
            self._token = self._refresh_at = None
        self._g.drop_cached_token(self.key_id)

    async def revoke(self) -> None:
        async with self._lock:
            token = self._token or (self._g.load_cached_token(self.key_id, self._g.clock()) or (None,))[0]
            self._token = self._refresh_at = None
            self._g.drop_cached_token(self.key_id)
            if token is None:
                return
            try:
                credentials = self._g.keys.credentials_any_status(self.user_id, self.account_no)
                await self._g.client.revoke_token(credentials.app_key, credentials.app_secret, token)
            except Exception as exc:  # the token is already unusable through us; report, do not raise
                log.warning("broker token revoke for %s failed: %s", self.key_id, type(exc).__name__)


class BrokerGateway:
    def __init__(
        self,
        db: Database,
        keys: KeyStore,
        client: KiwoomClient,
        tokens: TemporaryTokens,
        *,
        cache_key: bytes,
        detector: AnomalyDetector | None = None,
        alert: AlertSink | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.db = db
        self.keys = keys
        self.client = client
        self.tokens = tokens
        self.detector = detector or AnomalyDetector()
        self.alert = alert
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self._cache = AESGCM(cache_key)
        self._providers: dict[str, CachedBrokerTokens] = {}
        self._sessions: dict[str, KiwoomSession] = {}
        self._quotes: dict[str, tuple[datetime, int]] = {}
        self._quote_fetches: dict[str, asyncio.Future[int]] = {}
        self.kill_times: list[float] = []
        self._reported: dict[tuple[str, str, Grade], datetime] = {}

    def __repr__(self) -> str:
        return "BrokerGateway()"

    # --- temporary tokens (the orchestrator side) ---

    def get_temporary_token(
        self, user_id: str, account_no: str, actions: frozenset[str], spend_cap: int | None = None
    ) -> str:
        """A short-lived token for one user's account, bound to the key as it is now: a rotation of the key
        ends every token issued before it."""
        with self.db.statement() as conn:
            version = conn.execute(_KEY_VERSION, {"p_user": user_id, "p_account": account_no}).scalar()
        return self.tokens.issue(
            user_id, account_no, actions, spend_cap, now=self.clock(), key_version=version
        )

    async def temporary_token(
        self, user_id: str, account_no: str, actions: frozenset[str], spend_cap: int | None = None
    ) -> str:
        """:meth:`get_temporary_token` from the event loop, its read in the group commits."""
        rows = await self.db.batched(_KEY_VERSION).rows({"p_user": user_id, "p_account": account_no})
        version = rows[0][0] if rows else None
        return self.tokens.issue(
            user_id, account_no, actions, spend_cap, now=self.clock(), key_version=version
        )

    # --- broker token cache ---

    def provider(self, user_id: str, account_no: str) -> CachedBrokerTokens:
        kid = key_id(user_id, account_no)
        if kid not in self._providers:
            self._providers[kid] = CachedBrokerTokens(self, user_id, account_no)
        return self._providers[kid]

    def kiwoom(self, user_id: str, account_no: str) -> KiwoomSession:
        kid = key_id(user_id, account_no)
        if kid not in self._sessions:
            self._sessions[kid] = KiwoomSession(self.client, kid, self.provider(user_id, account_no))
        return self._sessions[kid]

    def load_cached_token(self, kid: str, now: datetime) -> tuple[str, datetime] | None:
        with self.db.statement() as conn:
            return self._unseal(kid, conn.execute(_CACHED_TOKEN, {"p_kid": kid}).first(), now)

    async def cached_token(self, kid: str, now: datetime) -> tuple[str, datetime] | None:
        """:meth:`load_cached_token` from the event loop, its read in the group commits."""
        rows = await self.db.batched(_CACHED_TOKEN).rows({"p_kid": kid})
        return self._unseal(kid, rows[0] if rows else None, now)

    def _unseal(self, kid: str, row: Sequence[Any] | None, now: datetime) -> tuple[str, datetime] | None:
        if row is None or row[1] <= now:
            return None
        sealed, expires = row[0], row[1]
        raw = base64.b64decode(sealed)
        try:
            token = self._cache.decrypt(raw[:12], raw[12:], kid.encode()).decode()
        except InvalidTag:
            return None
        return token, expires

    def store_cached_token(self, kid: str, token: str, refresh_at: datetime) -> None:
        nonce = os.urandom(12)
        sealed = base64.b64encode(nonce + self._cache.encrypt(nonce, token.encode(), kid.encode())).decode()
        for _ in range(2):  # another process may insert the key's row between our read and our insert
            try:
                with self.db.unit_of_work() as s:
                    row = s.get(BrokerTokenCache, kid)
                    if row is None:
                        s.add(BrokerTokenCache(key_id=kid, token_sealed=sealed, expires_at=refresh_at))
                    else:
                        row.token_sealed, row.expires_at = sealed, refresh_at
                return
            except sa.exc.IntegrityError:
                continue

    def drop_cached_token(self, kid: str) -> None:
        with self.db.unit_of_work() as s:
            row = s.get(BrokerTokenCache, kid)
            if row is not None:
                s.delete(row)

    # --- requests ---

    async def session(self, temp_token: str, origin: str) -> GatedSession:
        """Verify a temporary token and open a session limited to its user, account and actions."""
        now = self.clock()
        try:
            claims = self.tokens.verify(temp_token, now=now, check_revoked=False)  # the admission checks it
        except TokenRejected as exc:
            self._log(None, "session", origin, None, False, str(exc))
            raise AccessDenied(str(exc)) from None
        await self._admit(claims, "session", origin)
        return GatedSession(self, claims, origin)

    async def _admit(
        self,
        claims: TokenClaims,
        action: str,
        origin: str,
        amount: int | None = None,
        *,
        code: str | None = None,
        quantity: int | None = None,
    ) -> Budget:
        """Every request: key usable, token not revoked, scope, the security rules; logged either way. The
        checks are one read and the log entry one insert (:meth:`_check_and_log`). Returns the key's daily
        limit, for a buy what the account bought today before it (the buy check needs both), and the log
        entry. ``code`` and ``quantity`` (sells, cancels) tell a protective sell from any other."""
        now = self.clock()
        started = time.perf_counter()
        ref = ORDER_REF.get() if action == "order:buy" else None
        request = (claims, action, origin, amount, now, code, quantity)
        if self.db.batching and not (ref is not None and ref.resend):
            found = await self._check_and_log_batched(*request)
        else:
            found = await self.db.run(self._check_and_log, *request)
        await self._act_on(claims.user_id, claims.account_no, found.findings)
        observe_gateway(action, found.refusal is None, time.perf_counter() - started)
        if found.refusal is not None:
            raise AccessDenied(found.refusal)
        return Budget(found.daily_limit, found.spent_today, found.spent_by_token, found.log_id)

    def _check_and_log(
        self,
        claims: TokenClaims,
        action: str,
        origin: str,
        amount: int | None,
        now: datetime,
        code: str | None = None,
        quantity: int | None = None,
    ) -> Admission:
        """The checks of a request and its access-log entry, in this thread. One read and one insert, each
        committing by itself (a transaction around them would add two round trips and no guarantee); a
        re-send's entry and the superseding of the earlier calls it proves lost are one transaction."""
        ref = ORDER_REF.get() if action == "order:buy" else None
        resend = ref is not None and ref.resend
        statement, params = self._admission_read(claims, action, now, code)
        with self.db.transaction() if resend else self.db.statement() as conn:
            if ref is not None and ref.resend:
                conn.execute(_SUPERSEDED, {"p_ref": ref.key})
            found = conn.execute(statement, params).first()
            decided = self._decide(found, claims, action, origin, now, code, quantity)
            log_id = self._add_log(
                conn, claims, action, origin, amount, decided.refusal is None, decided.logged_reason,
                decided.last_used, now, order_ref=ref.key if ref else None,
            )  # fmt: skip
        return decided.admission(log_id)

    async def _check_and_log_batched(
        self,
        claims: TokenClaims,
        action: str,
        origin: str,
        amount: int | None,
        now: datetime,
        code: str | None = None,
        quantity: int | None = None,
    ) -> Admission:
        """:meth:`_check_and_log` (not a re-send) with the read and the insert in group commits: the same
        checks, the same entry, the same statements, each still committing before the next step."""
        ref = ORDER_REF.get() if action == "order:buy" else None
        statement, params = self._admission_read(claims, action, now, code)
        rows = await self.db.batched(statement).rows(params)
        decided = self._decide(rows[0] if rows else None, claims, action, origin, now, code, quantity)
        allowed = decided.refusal is None
        entry = _log_entry(claims, action, origin, amount, allowed, decided.logged_reason, now,
                           ref.key if ref else None)  # fmt: skip
        (row,) = await self.db.batched(_LOG, _LOG_KEYS).rows(entry)
        if _touch_due(allowed, claims, decided.last_used, now):
            await self.db.batched(_TOUCH, target=("p_user", "p_account")).run(
                {"p_user": claims.user_id, "p_account": claims.account_no, "p_now": now}
            )
        return decided.admission(int(row[0]))

    def _admission_read(
        self, claims: TokenClaims, action: str, now: datetime, code: str | None
    ) -> tuple[sa.Select[Any], dict[str, Any]]:
        """The one read every check needs: the key, its limit, the token's revocation, today's buys, the
        security rules' windows, what the product holds of a sell's code."""
        s = self.detector.settings
        if action == "order:buy":
            statement = _ADMIT_BUY
        elif action.startswith("order:") and code is not None:
            statement = _ADMIT_ORDER
        else:
            statement = _ADMIT
        params = {"p_user": claims.user_id, "p_account": claims.account_no, "p_jti": claims.jti,
                  "p_since": _day_start(now), "p_code": code,
                  "p_burst_since": now - timedelta(seconds=s.burst_window_seconds),
                  "p_fail_since": now - timedelta(seconds=s.failed_window_seconds),
                  "p_burst_cap": s.burst_requests + 1, "p_fail_cap": s.failed_checks}  # fmt: skip
        return statement, params

    def _decide(
        self,
        found: Sequence[Any] | None,
        claims: TokenClaims,
        action: str,
        origin: str,
        now: datetime,
        code: str | None,
        quantity: int | None,
    ) -> _Decision:
        """What the checks and the security rules make of the admission read's row."""
        if found is None:
            status, limit, last_used, revoked, spent_today, by_token, version = (
                None, None, None, False, 0, 0, None
            )  # fmt: skip
            recent = failures = held = 0
        else:
            status = None if found[0] is None else ApiStatus(found[0])
            limit, last_used, version = found[1], found[2], found[6]
            revoked, spent_today, by_token = bool(found[3]), int(found[4] or 0), int(found[5] or 0)
            recent, failures, held = int(found[7] or 0), int(found[8] or 0), int(found[9] or 0)
        refusal: str | None = None
        if status not in USABLE:
            refusal = f"key is {status.value if status else 'not registered'}"
        elif revoked:
            refusal = "temporary token revoked"
        elif claims.key_version != version:
            refusal = "temporary token issued for an earlier key"
        elif now >= claims.expires_at:
            refusal = "temporary token expired"
        elif action != "session" and action not in claims.actions:
            refusal = f"token does not allow {action}"
        kind = classify(action, held, quantity)
        findings: list[Finding] = []
        if status is ApiStatus.DISABLED and refusal is None:
            refusal = _outside_sell_only_scope(kind, action, code, quantity, held)
            if refusal is None and action == "order:sell":
                findings.append(AnomalyDetector.sell_only(f"sell of {quantity} {code} (held {held})"))
        elif status is ApiStatus.ACTIVE:
            # This request is one of the window's requests, and (refused) one of its refusals.
            findings = self.detector.on_request(kind, now, origin, recent + 1, checked=refusal is None)
            blocking = [f for f in findings if f.grade >= Grade.STEP_UP]
            if refusal is None and blocking:
                worst = max(blocking, key=lambda f: f.grade)
                held_back = HELD if worst.grade is Grade.STEP_UP else ""
                refusal = f"{held_back}blocked by security rule {worst.rule}"
            if refusal is not None and not refusal.startswith(HELD):
                findings += self.detector.on_refusal(failures + 1, refusal)
        logged = IN_FLIGHT if refusal is None and action == "order:buy" else refusal
        return _Decision(status, limit, spent_today, by_token, refusal, findings, logged, last_used)

    async def reference_price(self, session: GatedSession, code: str) -> int:
        """The price a market or at-close buy is checked against: a quote shared by every user for a few
        seconds (after the close it is the closing price, which is what at-close orders execute at)."""
        cached = self._quotes.get(code)
        if cached is not None and self.clock() - cached[0] < QUOTE_REUSE:
            return cached[1]
        loop = asyncio.get_running_loop()
        pending = self._quote_fetches.get(code)
        if pending is not None and pending.get_loop() is loop:
            # Many accounts buy the same stock at the same moment: one quote serves them all. Should the
            # fetching user's request fail (their key, their token), everyone else asks for themselves.
            with contextlib.suppress(Exception):
                return await asyncio.shield(pending)
            return (await session.quote(code)).price
        fetch: asyncio.Future[int] = loop.create_future()
        self._quote_fetches[code] = fetch
        try:
            price = (await session.quote(code)).price
        except BaseException as exc:
            fetch.set_exception(exc if isinstance(exc, Exception) else AccessDenied("quote cancelled"))
            fetch.exception()  # retrieved: waiters fall back to their own request
            raise
        finally:
            if self._quote_fetches.get(code) is fetch:
                del self._quote_fetches[code]
        fetch.set_result(price)
        self._quotes[code] = (self.clock(), price)
        return price

    async def _check_buy(self, claims: TokenClaims, origin: str, amount: int, budget: Budget) -> None:
        spent, limit, today = budget.spent_by_token, budget.daily_limit, budget.spent_today  # before this buy
        breach = None
        if claims.spend_cap is not None and spent + amount > claims.spend_cap:
            breach = f"buy of {amount:,} KRW exceeds the token's cap {claims.spend_cap:,} (spent {spent:,})"
        elif limit is not None and today + amount > limit:
            breach = f"buy of {amount:,} KRW exceeds the daily limit {limit:,} (spent today {today:,})"
        if breach is not None:
            self.not_placed(budget.log_id, "refused by the buy check")
            self._log(claims, "order:buy", origin, amount, False, breach)
            await self._act_on(claims.user_id, claims.account_no, [AnomalyDetector.limit_breach(breach)])
            raise AccessDenied(breach)

    def not_placed(self, log_id: int, why: str) -> None:
        """An allowed buy that did not reach the broker stops counting against the day's spending."""
        self._outcome(log_id, f"not placed: {why}")

    def _outcome(self, log_id: int, reason: str) -> None:
        with self.db.statement() as conn:
            conn.execute(_NOT_PLACED, {"p_id": log_id, "p_reason": reason[:255]})

    def _placed(self, log_id: int) -> None:
        """The broker accepted the admitted buy: it counts as placed, for good."""
        with self.db.statement() as conn:
            conn.execute(_PLACED, {"p_id": log_id})

    async def _act_on(self, user_id: str, account_no: str, findings: list[Finding]) -> None:
        """Act on findings by grade (see :mod:`autotrade.vault.anomaly`): DISABLE runs the kill switch; the
        others are recorded and, from ALERT up, shown to the operator (once per key and rule every
        ``ALERT_EVERY`` in this process, except a disabled key's sells: each of those)."""
        if not findings:
            return
        disabling = [f for f in findings if f.grade is Grade.DISABLE]
        if disabling:
            await self.kill(user_id, account_no, disabling[0].rule, disabling[0].detail)
            return
        now = self.clock()
        kid = key_id(user_id, account_no)
        for f in findings:
            every_time = f.rule == "sell_only_scope"
            last = self._reported.get((kid, f.rule, f.grade))
            if not every_time and last is not None and now - last < ALERT_EVERY:
                continue
            self._reported[(kid, f.rule, f.grade)] = now
            action = {Grade.RECORD: "recorded", Grade.ALERT: "operator alerted",
                      Grade.STEP_UP: "request refused, operator alerted"}[f.grade]  # fmt: skip
            await self.db.run(self._record, user_id, account_no, f.rule, f.grade, f.detail, action, now)
            if f.grade >= Grade.ALERT:
                self._tell(SecurityAlert(AlertEvent.FINDING, user_id, account_no, f.rule, f.grade, action,
                                         f.detail, now))  # fmt: skip

    async def kill(self, user_id: str, account_no: str, rule: str, detail: str) -> None:
        """The kill switch: disable the key (sell-only scope from then on), revoke the broker token, record,
        tell the operator and the user (once, by the process that disabled it)."""
        started = asyncio.get_running_loop().time()
        now = self.clock()
        changed = await self.db.run(self._disable, user_id, account_no, now)
        await self.provider(user_id, account_no).revoke()
        action = "key DISABLED (sell-only for the product's positions), broker token revoked"
        await self.db.run(self._record, user_id, account_no, rule, Grade.DISABLE, detail, action, now)
        self.kill_times.append(asyncio.get_running_loop().time() - started)
        log.warning("security rule %s hit for %s: %s", rule, key_id(user_id, account_no), action)
        if changed:
            positions = await self.db.run(open_positions, self.db, user_id, account_no)
            self._tell(SecurityAlert(AlertEvent.DISABLED, user_id, account_no, rule, Grade.DISABLE, action,
                                     detail, now, tuple(positions)))  # fmt: skip

    def _disable(self, user_id: str, account_no: str, now: datetime) -> bool:
        with self.db.statement() as conn:
            done = conn.execute(_DISABLE, {"p_user": user_id, "p_account": account_no, "p_now": now})
            return bool(done.rowcount)

    def _record(
        self, user_id: str, account_no: str, rule: str, grade: Grade, detail: str, action: str, at: datetime
    ) -> None:
        with self.db.unit_of_work() as s:
            s.add(SecurityEvent(at=at, user_id=user_id, account_no=account_no, rule=rule,
                                severity=grade.label, detail=detail[:1000], action_taken=action))  # fmt: skip

    def _tell(self, alert: SecurityAlert) -> None:
        if self.alert is None:
            return
        try:
            self.alert(alert)
        except Exception as exc:
            log.error("security alert could not be sent: %s", type(exc).__name__)

    def usable_credentials(self, user_id: str, account_no: str) -> Credentials:
        """The key's credentials when it may reach the broker: ACTIVE, or DISABLED (its sell-only scope,
        every request admitted first). One KMS Decrypt."""
        status = self._key_status(user_id, account_no)
        if status not in USABLE:
            raise KeyUnavailable(f"key is {status.value if status else 'not registered'}")
        return self.keys.credentials_any_status(user_id, account_no)

    # --- bookkeeping ---

    def _key_status(self, user_id: str, account_no: str) -> ApiStatus | None:
        with self.db.unit_of_work() as s:
            return s.scalar(
                sa.select(UserApiKey.api_status).where(
                    UserApiKey.user_id == user_id, UserApiKey.account_no == account_no
                )
            )

    def _log(
        self,
        claims: TokenClaims | None,
        action: str | None,
        origin: str | None,
        amount: int | None,
        allowed: bool,
        reason: str | None,
    ) -> None:
        with self.db.transaction() as conn:
            self._add_log(conn, claims, action, origin, amount, allowed, reason)

    def _add_log(
        self,
        conn: Connection,
        claims: TokenClaims | None,
        action: str | None,
        origin: str | None,
        amount: int | None,
        allowed: bool,
        reason: str | None,
        last_used: datetime | None = None,
        now: datetime | None = None,
        *,
        order_ref: str | None = None,
    ) -> int:
        now = now or self.clock()
        entry = _log_entry(claims, action, origin, amount, allowed, reason, now, order_ref)
        log_id: int = conn.execute(_LOG, entry).scalar_one()
        if claims is not None and _touch_due(allowed, claims, last_used, now):
            conn.execute(_TOUCH, {"p_user": claims.user_id, "p_account": claims.account_no, "p_now": now})
        return log_id


@dataclass(frozen=True, slots=True)
class _Decision:
    """The checks' verdict on a request, before its access-log entry is written."""

    status: ApiStatus | None
    daily_limit: int | None
    spent_today: int
    spent_by_token: int
    refusal: str | None
    findings: list[Finding]
    logged_reason: str | None  # the entry's reason: the refusal, or a buy's in-flight mark
    last_used: datetime | None

    def admission(self, log_id: int) -> Admission:
        return Admission(self.status, self.daily_limit, self.spent_today, self.spent_by_token, self.refusal,
                         self.findings, log_id)  # fmt: skip


def _log_entry(
    claims: TokenClaims | None,
    action: str | None,
    origin: str | None,
    amount: int | None,
    allowed: bool,
    reason: str | None,
    now: datetime,
    order_ref: str | None,
) -> dict[str, Any]:
    return {"at": now, "user_id": claims.user_id if claims else None,
            "account_no": claims.account_no if claims else None, "token_id": claims.jti if claims else None,
            "action": action or "session", "origin": (origin or "")[:128], "allowed": allowed,
            "reason": (reason or "")[:255] or None, "amount": amount, "order_ref": order_ref}  # fmt: skip


_LOG_KEYS = ("at", "user_id", "account_no", "token_id", "action", "origin", "allowed", "reason", "amount",
             "order_ref")  # fmt: skip


def _touch_due(allowed: bool, claims: TokenClaims | None, last_used: datetime | None, now: datetime) -> bool:
    """The key's "last used" is kept to the minute: one write a minute, not one per request."""
    return allowed and claims is not None and (last_used is None or now - last_used >= LAST_USED_STEP)


class GatedSession:
    """A Kiwoom session limited to one temporary token's user, account, actions and cap."""

    def __init__(self, gateway: BrokerGateway, claims: TokenClaims, origin: str) -> None:
        self._g = gateway
        self.claims = claims
        self.origin = origin
        self._kiwoom = gateway.kiwoom(claims.user_id, claims.account_no)

    def __repr__(self) -> str:
        return f"GatedSession(user={self.claims.user_id!r}, account={self.claims.account_no!r})"

    async def buy(self, code: str, quantity: int, price: int | None, trade_type: TradeType) -> OrderAck:
        if quantity <= 0 or (price is not None and price <= 0):
            why = "a buy needs a positive quantity and price"
            self._g._log(self.claims, "order:buy", self.origin, None, False, why)
            raise AccessDenied(why)
        reference = price if price is not None else await self._g.reference_price(self, code)
        amount = reference * quantity
        budget = await self._g._admit(self.claims, "order:buy", self.origin, amount)
        await self._g._check_buy(self.claims, self.origin, amount, budget)
        try:
            ack = await self._kiwoom.buy(code, quantity, price, trade_type)
        except BrokerError as exc:
            if exc.outcome_unknown:  # it may be out there: it keeps counting, until a proven re-send
                why = f"{OUTCOME_UNKNOWN}: {type(exc).__name__}"
                await self._g.db.run(self._g._outcome, budget.log_id, why)
                raise
            # Refused by the broker or never received: it is sent again or not at all, and counts once.
            await self._g.db.run(self._g.not_placed, budget.log_id, type(exc).__name__)
            raise
        except BaseException as exc:  # cancelled mid-call: as unknown as a timeout
            self._g._outcome(budget.log_id, f"{OUTCOME_UNKNOWN}: {type(exc).__name__}")
            raise
        await self._g.db.batched(_PLACED, target=("p_id",)).run({"p_id": budget.log_id})
        return ack

    async def sell(
        self,
        code: str,
        quantity: int,
        price: int | None,
        trade_type: TradeType,
        *,
        stop_price: int | None = None,
    ) -> OrderAck:
        await self._g._admit(self.claims, "order:sell", self.origin, code=code, quantity=quantity)
        return await self._kiwoom.sell(code, quantity, price, trade_type, stop_price=stop_price)

    async def cancel(self, orig_order_no: str, code: str, quantity: int = 0) -> OrderAck:
        await self._g._admit(self.claims, "order:cancel", self.origin, code=code)
        return await self._kiwoom.cancel(orig_order_no, code, quantity)

    async def modify(
        self, orig_order_no: str, code: str, quantity: int, price: int, *, stop_price: int | None = None
    ) -> OrderAck:
        """Moves shares of a working order (a resting stop): the same scope as a cancel, so a disabled key's
        sell-only scope may still shrink the resting stop of a position the product holds."""
        await self._g._admit(self.claims, "order:cancel", self.origin, code=code)
        return await self._kiwoom.modify(orig_order_no, code, quantity, price, stop_price=stop_price)

    async def deposit(self) -> Deposit:
        await self._g._admit(self.claims, "account:read", self.origin)
        return await self._kiwoom.deposit()

    async def holdings(self) -> HoldingsReport:
        await self._g._admit(self.claims, "account:read", self.origin)
        return await self._kiwoom.holdings()

    async def unfilled_orders(self, code: str | None = None) -> list[UnfilledOrder]:
        await self._g._admit(self.claims, "account:read", self.origin)
        return await self._kiwoom.unfilled_orders(code)

    async def filled_orders(self, code: str | None = None) -> list[FilledOrder]:
        await self._g._admit(self.claims, "account:read", self.origin)
        return await self._kiwoom.filled_orders(code)

    async def quote(self, code: str) -> Quote:
        await self._g._admit(self.claims, "account:read", self.origin)
        return await self._kiwoom.quote(code)


def _outside_sell_only_scope(
    kind: RequestKind, action: str, code: str | None, quantity: int | None, held: int
) -> str | None:
    """Why a DISABLED key's request is outside its sell-only scope (None: inside it)."""
    if kind in (RequestKind.READ, RequestKind.PROTECTIVE_SELL):
        return None
    if kind is RequestKind.BUY:
        return "key is DISABLED: only sells of the product's positions are allowed"
    if held <= 0:
        return f"key is DISABLED: the product holds no open position in {code or 'this stock'}"
    return f"key is DISABLED: {action} of {quantity} exceeds the {held} shares the product holds"


def open_positions(db: Database, user_id: str, account_no: str) -> list[str]:
    """Codes of the product's open positions in an account (what a disabled key still protects, or what a
    deleted key leaves unmanaged), e.g. ``["005930 x10"]``."""
    with db.unit_of_work() as s:
        rows = s.execute(
            sa.select(ThreeTierStrategy.code, sa.func.sum(ThreeTierStrategy.held_quantity))
            .where(
                ThreeTierStrategy.user_id == user_id, ThreeTierStrategy.account_no == account_no,
                ThreeTierStrategy.closed_at.is_(None), ThreeTierStrategy.held_quantity > 0,
            )
            .group_by(ThreeTierStrategy.code)
            .order_by(ThreeTierStrategy.code)
        ).all()  # fmt: skip
    return [f"{code} x{int(qty)}" for code, qty in rows]


_ENABLE = (
    sa.update(UserApiKey)
    .where(*_KEY_OF_TOKEN, UserApiKey.api_status == ApiStatus.DISABLED)
    .values(
        api_status=ApiStatus.ACTIVE,
        status_changed_at=sa.bindparam("p_now", type_=UserApiKey.status_changed_at.type),
    )
)


def enable_key(
    db: Database, alert: AlertSink | None, user_id: str, account_no: str, *, by: str, now: datetime
) -> bool:
    """An operator re-enables a key the kill switch DISABLED: ACTIVE again, its security windows start
    anew, a security event names the operator, the user is told. Auto-trading stays off until the user
    turns it back on (their consent, not the operator's). False when the key was not DISABLED (a DELETED
    key is gone for good; an ACTIVE one needs nothing)."""
    with db.statement() as conn:
        done = conn.execute(_ENABLE, {"p_user": user_id, "p_account": account_no, "p_now": now}).rowcount
    if not done:
        return False
    action = f"key re-enabled by operator {by}"
    with db.unit_of_work() as s:
        s.add(SecurityEvent(at=now, user_id=user_id, account_no=account_no, rule="operator_enable",
                            severity=Grade.RECORD.label, detail="", action_taken=action[:128]))  # fmt: skip
    log.warning("%s: %s", key_id(user_id, account_no), action)
    if alert is not None:
        try:
            alert(SecurityAlert(AlertEvent.ENABLED, user_id, account_no, "operator_enable", Grade.RECORD,
                                action, "", now))  # fmt: skip
        except Exception as exc:
            log.error("security alert could not be sent: %s", type(exc).__name__)
    return True
