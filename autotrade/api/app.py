"""The REST API. Every route that reads trading data filters by the caller's user id; operators have their
own routes. Broker keys only ever go into the vault (``Registrar``); responses never echo them."""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Protocol, cast

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from autotrade.api import schemas as sc
from autotrade.api.auth import (
    USER_CACHE_SECONDS,
    Principal,
    RateLimiter,
    SessionCheck,
    SessionTokens,
    hash_password,
    verify_password,
)
from autotrade.api.limits import BodyLimit, LoginLimits, Network, client_address
from autotrade.domain.krx import KST
from autotrade.domain.models import ApiStatus
from autotrade.store.db import Database
from autotrade.store.models import SecurityEvent, ThreeTierStrategy, User, UserApiKey

log = logging.getLogger(__name__)
bearer = HTTPBearer(auto_error=False)


class RegistrationError(Exception):
    """The broker refused the key, or the account does not match it (message safe to show)."""


class ExecuteRefused(Exception):
    """The execute request cannot run as asked (a day outside the calendar, a rejected scan); safe to show."""


class Registrar(Protocol):
    """The vault's side of key management."""

    async def register(
        self, user_id: str, app_key: SecretStr, app_secret: SecretStr, account_no: str, daily_limit: int
    ) -> sc.AccountInfo: ...

    async def rotate(
        self, user_id: str, account_no: str, app_key: SecretStr, app_secret: SecretStr
    ) -> None: ...

    async def delete(self, user_id: str, account_no: str) -> list[str]:
        """Crypto-shred the key; returns the open positions it leaves unmanaged (``code xN``)."""
        ...

    async def enable(self, user_id: str, account_no: str, by: str) -> ApiStatus | None:
        """An operator (``by``) re-enables a key the kill switch disabled; only a DISABLED key becomes
        ACTIVE. Returns the key's status afterwards (None: no such key)."""
        ...


ExecuteRunner = Callable[[sc.ExecuteRequest], Awaitable[sc.ExecuteResponse]]
PriceLookup = Callable[[str, list[str]], Awaitable[dict[str, int]]]  # (user id, codes) -> prices


@dataclass
class ApiDeps:
    db: Database
    tokens: SessionTokens
    registrar: Registrar
    execute: ExecuteRunner
    prices: PriceLookup
    token_ttl: timedelta = timedelta(hours=1)
    register_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(limit=10, window=300))
    # built from ``db`` when not given: the shared login/sign-up limits and the per-request session check
    limits: LoginLimits | None = None
    sessions: SessionCheck | None = None
    trusted_proxies: tuple[Network, ...] = ()  # peers whose X-Forwarded-For is believed
    docs: bool = True  # serve /docs and /redoc (the OpenAPI document itself is always served)

    def __post_init__(self) -> None:
        if self.limits is None:
            self.limits = LoginLimits(self.db)
        if self.sessions is None:
            self.sessions = SessionCheck(self.db, USER_CACHE_SECONDS)


def _principal(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    """A signed, unexpired token whose user still exists, whose password has not changed since and which
    was not logged out; the role is the user's current one (``SessionCheck``, cached 5 s)."""
    deps: ApiDeps = request.app.state.deps
    found = deps.tokens.verify(creds.credentials) if creds else None
    if found is not None and deps.sessions is not None:
        found = deps.sessions.current(found)
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "not authenticated", headers={"WWW-Authenticate": "Bearer"}
        )
    return found


def _operator(p: Annotated[Principal, Depends(_principal)]) -> Principal:
    if not p.is_operator:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "operator role required")
    return p


CurrentUser = Annotated[Principal, Depends(_principal)]
CurrentOperator = Annotated[Principal, Depends(_operator)]


# The largest body: a scan of 5,000 rows with a few reasons each is about 1 MB.
MAX_BODY_BYTES = 2 * 1024 * 1024


def create_app(deps: ApiDeps) -> FastAPI:
    def refusal(description: str) -> dict[str, Any]:
        return {"model": sc.ErrorResponse, "description": description}

    app = FastAPI(
        docs_url="/docs" if deps.docs else None,
        redoc_url="/redoc" if deps.docs else None,
        responses={
            400: refusal("refused: the broker did not accept the key, or the request cannot be done"),
            401: refusal("not authenticated (missing, expired or forged token; wrong credentials)"),
            403: refusal("operator role required"),
            404: refusal("no such key or account of yours"),
            409: refusal("conflict: the key's state does not allow it"),
            413: refusal("request body too large"),
            429: refusal("too many attempts; try again later"),
        },
        title="autotrade API",
        version="0.1.0",
        description="AI scan to Kiwoom orders with a three-tier exit: registration of broker keys, status, "
        "execution and strategy views. Authenticate with `POST /api/auth/login` and send the token as "
        "`Authorization: Bearer <token>`.",
    )

    app.state.deps = deps
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each wrong field and why, without echoing the input: it can hold a password or an app
        secret, or text that cannot even be encoded in the answer."""
        errors = [
            {
                "type": str(e.get("type", "")),
                "loc": [p if isinstance(p, int) else _printable(p) for p in e.get("loc", ())],
                "msg": _printable(e.get("msg", "")),
            }
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    def client_of(request: Request) -> str:
        peer = request.client.host if request.client else None
        return client_address(peer, request.headers.get("x-forwarded-for"), deps.trusted_proxies)

    def limited(limiter: RateLimiter, request: Request, name: str) -> None:
        if not limiter.allow(f"{client_of(request)}|{name.lower()}"):
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many attempts; try again later")

    def too_many(wait: float) -> HTTPException:
        return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, "too many attempts; try again later",
                             headers={"Retry-After": str(max(1, math.ceil(wait)))})  # fmt: skip

    limits, sessions = cast(LoginLimits, deps.limits), cast(SessionCheck, deps.sessions)  # __post_init__

    def own_key(s: sa.orm.Session, user_id: str, account_no: str | None) -> UserApiKey:
        q = sa.select(UserApiKey).where(
            UserApiKey.user_id == user_id, UserApiKey.api_status != ApiStatus.DELETED
        )
        if account_no is not None:
            q = q.where(UserApiKey.account_no == account_no)
        key = s.scalar(q.order_by(UserApiKey.id))
        if key is None:  # another user's account looks exactly like a missing one
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no registered API key for this account")
        return key

    @app.get("/health", response_model=sc.HealthResponse, tags=["operations"])
    def health() -> sc.HealthResponse:
        """Liveness and database reachability."""
        try:
            with deps.db.unit_of_work() as s:
                s.execute(sa.text("SELECT 1"))
            return sc.HealthResponse(status="ok", database="ok")
        except Exception as exc:
            return sc.HealthResponse(status="degraded", database=type(exc).__name__)

    @app.post("/api/auth/signup", response_model=sc.SignupResponse, status_code=201, tags=["auth"])
    def signup(body: sc.SignupRequest, request: Request) -> sc.SignupResponse:
        """Create a user account. The answer is the same whether or not the email was already registered
        (the password is hashed either way, so the timing matches); sign-ups are limited per client."""
        if not limits.signup_allowed(client_of(request)):
            raise too_many(limits.signup_window)
        password_hash = hash_password(body.password.get_secret_value())
        try:
            with deps.db.unit_of_work() as s:
                if s.scalar(sa.select(User.user_id).where(User.email == body.email.lower())) is None:
                    email = body.email.lower()
                    s.add(User(user_id=uuid.uuid4().hex, email=email, password_hash=password_hash))
        except sa.exc.IntegrityError:
            pass  # the same email signed up at the same moment: the same answer
        return sc.SignupResponse(message="가입 요청을 받았습니다: 로그인하세요")

    @app.post(
        "/api/auth/login",
        response_model=sc.TokenResponse,
        tags=["auth"],
        responses={
            401: {"description": "wrong email or password"},
            429: {"description": "too many attempts"},
        },
    )
    def login(body: sc.LoginRequest, request: Request) -> sc.TokenResponse:
        """Exchange email and password for a bearer token. After 5 wrong passwords an account waits 1, 2,
        4 ... s (at most 30 s) between tries; a client with 30 failed logins in 15 minutes (any emails)
        waits 15 minutes; 429 with ``Retry-After``."""
        client = client_of(request)
        wait = limits.login_refusal(body.email, client)
        if wait is not None:
            raise too_many(wait)
        with deps.db.unit_of_work() as s:
            user = s.scalar(sa.select(User).where(User.email == body.email.lower()))
            ok = verify_password(user.password_hash if user else None, body.password.get_secret_value())
            token = (deps.tokens.issue(Principal(user.user_id, user.role, epoch=user.session_epoch))
                     if ok and user is not None else None)  # fmt: skip
        if token is None:
            limits.login_failed(body.email, client)
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong email or password")
        limits.login_succeeded(body.email)
        return sc.TokenResponse(access_token=token, expires_in=int(deps.token_ttl.total_seconds()))

    @app.post("/api/auth/logout", response_model=sc.MessageResponse, tags=["auth"])
    def logout(me: CurrentUser) -> sc.MessageResponse:
        """Revoke the token presented (in every API process, until it would have expired)."""
        sessions.revoke(me, "logout")
        return sc.MessageResponse(message="로그아웃했습니다")

    @app.post(
        "/api/auth/password",
        response_model=sc.MessageResponse,
        tags=["auth"],
        responses={401: refusal("not authenticated, or the current password is wrong")},
    )
    def change_password(
        body: sc.PasswordChangeRequest, me: CurrentUser, request: Request
    ) -> sc.MessageResponse:
        """Change your password: every token issued before (this one included) stops working; log in
        again. A wrong current password counts as a failed login of the account (and waits like one)."""
        with deps.db.unit_of_work() as s:
            email = s.scalar(sa.select(User.email).where(User.user_id == me.user_id))
        wait = limits.login_refusal(email, client_of(request)) if email else None
        if wait is not None:
            raise too_many(wait)
        new_hash = hash_password(body.new_password.get_secret_value())
        current = body.current_password.get_secret_value()
        with deps.db.unit_of_work() as s:
            user = s.get(User, me.user_id, with_for_update=True)
            ok = user is not None and verify_password(user.password_hash, current)
            if ok and user is not None:
                user.password_hash = new_hash
                user.session_epoch = (user.session_epoch or 0) + 1
        if not ok:
            if email:
                limits.login_failed(email, client_of(request))
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong current password")
        sessions.forget(me.user_id)
        return sc.MessageResponse(message="비밀번호를 바꿨습니다: 다시 로그인하세요")

    @app.post(
        "/api/user/register-api",
        response_model=sc.RegisterApiResponse,
        tags=["user"],
        responses={400: {"description": "the broker refused the key"}, 429: {"description": "rate limited"}},
    )
    async def register_api(
        body: sc.RegisterApiRequest, me: CurrentUser, request: Request
    ) -> sc.RegisterApiResponse:
        """Register a Kiwoom app key for one of your accounts; it is checked with the broker, then sealed
        under the KMS. The key is never returned."""
        limited(deps.register_limiter, request, me.user_id)
        try:
            info = await deps.registrar.register(
                me.user_id, body.app_key, body.app_secret, body.account_no, body.daily_limit
            )
        except RegistrationError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        except PermissionError:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no registered API key for this account") from None
        return sc.RegisterApiResponse(success=True, message="API 키 등록 완료", account_info=info)

    @app.get("/api/user/api-status", response_model=sc.ApiStatusResponse, tags=["user"])
    def api_status(
        me: CurrentUser, account_no: Annotated[str | None, Query(pattern=sc.ACCOUNT_NO)] = None
    ) -> sc.ApiStatusResponse:
        """Status of your key (your first account unless ``account_no`` is given)."""
        with deps.db.unit_of_work() as s:
            k = own_key(s, me.user_id, account_no)
            return sc.ApiStatusResponse(
                api_status=k.api_status.value,
                account_no=k.account_no,
                account_name=k.account_name,
                daily_limit=k.daily_limit,
                is_auto_trading_enabled=k.is_auto_trading_enabled,
                last_used_at=k.last_used_at,
                action=_what_to_do(k.api_status),
            )

    @app.get("/api/user/accounts", response_model=list[sc.AccountSummary], tags=["user"])
    def accounts(me: CurrentUser) -> list[sc.AccountSummary]:
        """Your accounts and their keys' status."""
        with deps.db.unit_of_work() as s:
            keys = s.scalars(
                sa.select(UserApiKey).where(UserApiKey.user_id == me.user_id).order_by(UserApiKey.id)
            ).all()
            return [
                sc.AccountSummary(
                    account_no=k.account_no,
                    account_name=k.account_name,
                    api_status=k.api_status.value,
                    is_auto_trading_enabled=k.is_auto_trading_enabled,
                    daily_limit=k.daily_limit,
                )
                for k in keys
            ]

    @app.post("/api/user/auto-trading", response_model=sc.MessageResponse, tags=["user"])
    def toggle(body: sc.AutoTradingToggle, me: CurrentUser) -> sc.MessageResponse:
        """Enable or disable auto-trading on one of your accounts."""
        with deps.db.unit_of_work() as s:
            k = own_key(s, me.user_id, body.account_no)
            if body.enabled and k.api_status is not ApiStatus.ACTIVE:
                raise HTTPException(
                    status.HTTP_409_CONFLICT, f"key is {k.api_status.value}; register it again"
                )
            k.is_auto_trading_enabled = body.enabled
        return sc.MessageResponse(message="자동매매 " + ("활성화" if body.enabled else "비활성화"))

    @app.post("/api/user/api-key/rotate", response_model=sc.MessageResponse, tags=["user"])
    async def rotate(body: sc.RotateKeyRequest, me: CurrentUser, request: Request) -> sc.MessageResponse:
        """Replace the app key of one of your accounts (validated with the broker first)."""
        limited(deps.register_limiter, request, me.user_id)
        with deps.db.unit_of_work() as s:
            own_key(s, me.user_id, body.account_no)
        try:
            await deps.registrar.rotate(me.user_id, body.account_no, body.app_key, body.app_secret)
        except RegistrationError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        return sc.MessageResponse(message="API 키 교체 완료")

    @app.patch("/api/user/api-key/{account_no}", response_model=sc.ApiStatusResponse, tags=["user"])
    def set_daily_limit(
        account_no: Annotated[str, PathParam(pattern=sc.ACCOUNT_NO)],
        body: sc.DailyLimitRequest,
        me: CurrentUser,
    ) -> sc.ApiStatusResponse:
        """Change the daily limit (KRW) of one of your keys; it applies to the next buys."""
        with deps.db.unit_of_work() as s:
            k = own_key(s, me.user_id, account_no)
            k.daily_limit = body.daily_limit
        return api_status(me, account_no)

    @app.delete("/api/user/api-key/{account_no}", response_model=sc.KeyDeletedResponse, tags=["user"])
    async def delete_key(
        account_no: Annotated[str, PathParam(pattern=sc.ACCOUNT_NO)], me: CurrentUser
    ) -> sc.KeyDeletedResponse:
        """Delete the key of one of your accounts; its data key is destroyed (crypto-shredding), so nothing
        can be sold with it any more: the open positions it leaves are listed as no longer managed (their
        stop-loss and take-profit no longer run) in the answer and in a notice."""
        with deps.db.unit_of_work() as s:
            own_key(s, me.user_id, account_no)
        unmanaged = await deps.registrar.delete(me.user_id, account_no)
        message = "API 키 삭제 완료"
        if unmanaged:
            message += f": 보유 종목 {len(unmanaged)}개는 더 이상 자동 관리되지 않습니다 (직접 관리하세요)"
        return sc.KeyDeletedResponse(message=message, unmanaged_positions=unmanaged)

    @app.get(
        "/api/auto-trading/three-tier-strategies", response_model=sc.StrategiesResponse, tags=["trading"]
    )
    async def strategies(me: CurrentUser, include_closed: bool = False) -> sc.StrategiesResponse:
        """Your three-tier strategies: entry, current price, profit rate, status and each tier's order."""
        with deps.db.unit_of_work() as s:
            q = sa.select(ThreeTierStrategy).where(ThreeTierStrategy.user_id == me.user_id)
            if not include_closed:
                q = q.where(ThreeTierStrategy.closed_at.is_(None))
            rows = s.scalars(q.order_by(ThreeTierStrategy.id)).all()
            data = [
                (
                    r.code,
                    r.name,
                    r.entry_price,
                    r.status.value,
                    [
                        sc.TierOrderOut(type=o.order_type.value, price=o.trigger_price, status=o.status.value)
                        for o in r.orders
                    ],
                )
                for r in rows
            ]
        prices = await deps.prices(me.user_id, sorted({d[0] for d in data})) if data else {}
        out = []
        for code, name, entry, st, orders in data:
            px = prices.get(code)
            rate = round((px - entry) / entry * 100, 2) if px else None
            out.append(
                sc.StrategyOut(
                    code=code,
                    name=name,
                    entry_price=entry,
                    current_price=px,
                    profit_rate=rate,
                    status=st,
                    orders=orders,
                )
            )
        return sc.StrategiesResponse(active_strategies=out)

    @app.post(
        "/api/auto-trading/execute",
        response_model=sc.ExecuteResponse,
        tags=["trading"],
        responses={202: {"model": sc.ExecuteResponse, "description": "flow run started"}},
    )
    async def execute(body: sc.ExecuteRequest, _: CurrentOperator, response: Response) -> sc.ExecuteResponse:
        """Operator: validate a scan and start the evening flow for every enabled account. 400 with the
        reason for a day outside the KRX calendar or a scan that fails validation."""
        try:
            result = await deps.execute(body)
        except ExecuteRefused as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None
        if result.run_id is not None and not result.success:
            response.status_code = status.HTTP_202_ACCEPTED
        return result

    @app.post(
        "/api/admin/api-keys/{user_id}/{account_no}/enable",
        response_model=sc.KeyEnabledResponse,
        tags=["operations"],
        responses={409: refusal("the key is not DISABLED (a deleted key cannot come back)")},
    )
    async def enable_key(
        user_id: Annotated[str, PathParam(min_length=1, max_length=64)],
        account_no: Annotated[str, PathParam(pattern=sc.ACCOUNT_NO)],
        op: CurrentOperator,
    ) -> sc.KeyEnabledResponse:
        """Operator: re-enable a key the kill switch disabled, once the finding is understood. The key is
        ACTIVE again, the user is told; auto-trading stays off until the user turns it back on."""
        now = await deps.registrar.enable(user_id, account_no, op.user_id)
        if now is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no registered API key for this account")
        if now is not ApiStatus.ACTIVE:
            why = f"key is {now.value}; only a DISABLED key is re-enabled"
            raise HTTPException(status.HTTP_409_CONFLICT, why)
        return sc.KeyEnabledResponse(
            message="API 키 재활성화 완료", user_id=user_id, account_no=account_no, api_status=now.value
        )

    @app.get("/api/admin/security-events", tags=["operations"])
    def security_events(
        _: CurrentOperator, limit: Annotated[int, Query(ge=1, le=1000)] = 100
    ) -> list[dict[str, Any]]:
        """Operator: the latest security events (anomaly detections, kill-switch actions)."""
        with deps.db.unit_of_work() as s:
            rows = s.scalars(sa.select(SecurityEvent).order_by(SecurityEvent.id.desc()).limit(limit))
            return [
                {
                    "at": r.at.isoformat(),
                    "user_id": r.user_id,
                    "account_no": r.account_no,
                    "rule": r.rule,
                    "severity": r.severity,
                    "action_taken": r.action_taken,
                }
                for r in rows
            ]

    from autotrade.api.ops import include_ops
    from autotrade.api.web import include_web

    include_ops(app, deps)  # operator routes, /metrics and /ready (autotrade/api/ops.py)
    include_web(app, deps)  # the web app at / and its live feed (autotrade/api/web.py)
    from autotrade.api.notices import router as notices
    from autotrade.api.preferences import router as preferences  # imports this module: here, not on top

    app.include_router(preferences)
    app.include_router(notices)  # what a user was told (autotrade/api/notices.py)
    return app


def _what_to_do(status_: ApiStatus) -> str | None:
    from autotrade.vault.registration import WHAT_TO_DO

    if status_ is ApiStatus.DISABLED:
        return "the security rules disabled this key: an operator re-enables it once it is understood"
    if status_ is ApiStatus.DELETED:
        return "this key was deleted: register a new one"
    return WHAT_TO_DO.get(status_)


def _printable(value: object) -> str:
    return str(value)[:200].encode("utf-8", "backslashreplace").decode("utf-8")


def now_kst() -> datetime:
    return datetime.now(KST)


def in_embedded_mode() -> bool:
    """No Prefect server configured: the execute endpoint runs the flow in-process."""
    return not os.environ.get("PREFECT_API_URL")
