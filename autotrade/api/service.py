"""The API wired to the product: keys registered through the vault (validated with the broker), the execute
endpoint starting the evening flow (in this process in the embedded mode, through the deployment when a
Prefect server is configured), current prices through the gateway.

``autotrade api serve`` builds these with :func:`build_deps`; tests use the same functions.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Awaitable, Coroutine
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic import SecretStr

from autotrade.api import schemas as sc
from autotrade.api.app import (
    ApiDeps,
    ExecuteRefused,
    ExecuteRunner,
    PriceLookup,
    RegistrationError,
    in_embedded_mode,
)
from autotrade.api.auth import SessionTokens
from autotrade.domain.krx import KST
from autotrade.domain.models import ApiStatus
from autotrade.runtime import READ, Runtime
from autotrade.trading.buys import AccountRef

log = logging.getLogger(__name__)
DEPLOYMENT = "evening_signal_and_buy/evening"


class GatewayRegistrar:
    """Key management through the vault: every key is checked with the broker before it is sealed."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def _gateway(self) -> Any:
        return self.rt.brokers.gateway()  # type: ignore[attr-defined]

    async def register(
        self, user_id: str, app_key: SecretStr, app_secret: SecretStr, account_no: str, daily_limit: int
    ) -> sc.AccountInfo:
        from autotrade.vault.registration import RegistrationRefused, register_user_api

        try:
            info = await register_user_api(
                self._gateway(), user_id, app_key, app_secret, account_no, daily_limit=daily_limit
            )
        except RegistrationRefused as exc:
            raise RegistrationError(str(exc)) from None
        except PermissionError:
            raise RegistrationError("this account is registered to another user") from None
        await self.rt.db.run(self._windows_restart, user_id, account_no)
        return sc.AccountInfo(
            account_no=info.account_no, account_name=info.account_name, balance=info.balance
        )

    def _windows_restart(self, user_id: str, account_no: str) -> None:
        """A key (re-)registered is ACTIVE afresh: what the earlier key's requests did no longer counts in
        the security windows (a user re-registering after a kill is not cut off again by its refusals)."""
        import sqlalchemy as sa

        from autotrade.store.models import UserApiKey

        with self.rt.db.unit_of_work() as s:
            s.execute(
                sa.update(UserApiKey)
                .where(UserApiKey.user_id == user_id, UserApiKey.account_no == account_no)
                .values(status_changed_at=self.rt.clock())
            )

    async def rotate(self, user_id: str, account_no: str, app_key: SecretStr, app_secret: SecretStr) -> None:
        """A new key for the same account: validated and sealed under a new data key, the old broker token
        revoked; the daily limit is kept."""
        import sqlalchemy as sa

        from autotrade.store.models import UserApiKey

        with self.rt.db.unit_of_work() as s:
            limit = s.scalar(
                sa.select(UserApiKey.daily_limit).where(
                    UserApiKey.user_id == user_id, UserApiKey.account_no == account_no
                )
            )
        await self._gateway().provider(user_id, account_no).revoke()
        await self.register(user_id, app_key, app_secret, account_no, int(limit or 1))

    async def delete(self, user_id: str, account_no: str) -> list[str]:
        """Revoke the broker token, then crypto-shred the key. Nothing can be sold with it afterwards: the
        product's open positions in the account are no longer managed, and the user is told which."""
        from autotrade.notify.messages import positions_unmanaged
        from autotrade.vault.gateway import open_positions

        await self._gateway().provider(user_id, account_no).revoke()
        self.rt.brokers.keys.destroy(user_id, account_no)  # type: ignore[attr-defined]
        unmanaged = await self.rt.db.run(open_positions, self.rt.db, user_id, account_no)
        self.rt.notify(positions_unmanaged(user_id, account_no, unmanaged, self.rt.clock()))
        return unmanaged

    async def enable(self, user_id: str, account_no: str, by: str) -> ApiStatus | None:
        """An operator re-enables a DISABLED key (:func:`autotrade.vault.gateway.enable_key`); the user and
        the operator are told through the runtime's dispatcher."""
        return await self.rt.db.run(reenable, self.rt, user_id, account_no, by)


def reenable(runtime: Runtime, user_id: str, account_no: str, by: str) -> ApiStatus | None:
    """Re-enable a DISABLED key for the API and the CLI: its status afterwards (None: no such key)."""
    import sqlalchemy as sa

    from autotrade.store.models import UserApiKey
    from autotrade.vault.gateway import enable_key

    alert = getattr(runtime.brokers, "alert", None)
    enable_key(runtime.db, alert, user_id, account_no, by=by, now=runtime.clock())
    with runtime.db.unit_of_work() as s:
        return s.scalar(
            sa.select(UserApiKey.api_status).where(
                UserApiKey.user_id == user_id, UserApiKey.account_no == account_no
            )
        )


def flow_runner(runtime: Runtime, wait_seconds: float = 20.0) -> ExecuteRunner:
    """``execute``: the day's evening flow on the posted scan, its ``config`` tightening (never loosening) the
    configured limits for this run. Embedded: run in this process and answer with
    its summary when it ends within ``wait_seconds``, else 202 with the run's name. With a Prefect server:
    start the deployment and answer 202 with the flow run id at once (``wait_seconds`` is not used: the run's
    result stays on its worker). A day that is not a KRX trading day is answered without starting a run."""
    running: set[asyncio.Task[dict[str, Any]]] = set()

    async def run(req: sc.ExecuteRequest) -> sc.ExecuteResponse:
        from autotrade.domain.calendar import CalendarRangeError, is_trading_day

        now = runtime.clock().astimezone(KST)
        day = req.trading_day or now.date()
        try:
            trading = is_trading_day(day)
        except CalendarRangeError as exc:
            raise ExecuteRefused(str(exc)) from None
        if not trading:  # a KRX holiday or a weekend: answered here, no run is started (nor a deployment's)
            closed = f"{day}: not a KRX trading day"
            return sc.ExecuteResponse(success=False, executed_orders=0, total_investment=0,
                                      strategies_created=0, message=closed)  # fmt: skip
        payload = {
            "trading_day": day.isoformat(),
            "generated_at": now.isoformat(),
            "scan_results": [r.model_dump() for r in req.scan_results],
        }
        limits = {"max_daily_investment": req.config.max_investment, "max_stock_count": req.config.max_stocks,
                  "max_per_stock": req.config.max_per_stock}  # fmt: skip
        parameters: dict[str, Any] = {
            "trading_day": day, "scan_payload": payload, "dry_run": req.dry_run, "limits": limits,
        }  # fmt: skip
        if not in_embedded_mode():
            from prefect.deployments import run_deployment

            started = run_deployment(DEPLOYMENT, parameters=parameters, timeout=0)
            flow_run = await cast(Awaitable[Any], started)
            return _started(str(flow_run.id))
        from flows.evening_signal_and_buy import evening_signal_and_buy

        name = f"api-{day:%Y%m%d}-{uuid.uuid4().hex[:8]}"
        flow = evening_signal_and_buy.with_options(flow_run_name=name)
        running_flow = flow(trading_day=day, scan_payload=payload, dry_run=req.dry_run, limits=limits,
                            return_state=True)  # fmt: skip
        task: asyncio.Task[Any] = asyncio.create_task(cast(Coroutine[Any, Any, Any], running_flow))
        running.add(task)
        task.add_done_callback(running.discard)
        from tasks.trading import ScanRejected

        try:
            state = await asyncio.wait_for(asyncio.shield(task), wait_seconds)
        except TimeoutError:
            return _started(name)
        # A failed run's result is its exception (a rejected scan: 400) or its summary (every account
        # failed: the summary, success false, with the run's message).
        outcome = await cast(Awaitable[Any], state.result(raise_on_failure=False, _sync=False))
        if isinstance(outcome, ScanRejected):
            raise ExecuteRefused(f"the scan was rejected: {str(outcome)[:500]}")
        if isinstance(outcome, BaseException):
            raise outcome
        result: dict[str, Any] = outcome if isinstance(outcome, dict) else {}
        if not state.is_completed():
            return sc.ExecuteResponse(
                success=False, executed_orders=int(result.get("orders", 0)),
                total_investment=int(result.get("invested", 0)),
                strategies_created=int(result.get("positions_armed", 0)),
                message=f"{name}: {state.message or 'the run failed'}"[:500],
            )  # fmt: skip
        if result.get("skipped"):
            skipped = f"{day}: {result['skipped']}"
            return sc.ExecuteResponse(success=False, executed_orders=0, total_investment=0,
                                      strategies_created=0, message=skipped)  # fmt: skip
        return sc.ExecuteResponse(
            success=int(result.get("accounts_with_errors", 0)) == 0,
            executed_orders=int(result.get("orders", 0)),
            total_investment=int(result.get("invested", 0)),
            strategies_created=int(result.get("positions_armed", 0)),
            message="자동매매 실행 완료" + (" (모의 실행)" if req.dry_run else ""),
            plans=_plans(result["planned"], req) if req.dry_run and "planned" in result else None,
        )

    return run


def _plans(planned: list[dict[str, Any]], req: sc.ExecuteRequest) -> list[sc.AccountPlanOut]:
    """A dry run's planned orders grouped per user and account, in the order the run planned them."""
    names = {r.code: r.name for r in req.scan_results}
    plans: dict[tuple[str, str], sc.AccountPlanOut] = {}
    for o in planned:
        key = (str(o["user"]), str(o["account"]))
        plan = plans.setdefault(key, sc.AccountPlanOut(user_id=key[0], account_no=key[1], total=0, orders=[]))
        code, qty, price = str(o["code"]), int(o["quantity"]), int(o["price"])
        amount = qty * price
        name = names.get(code, "")
        plan.orders.append(sc.PlannedOrderOut(code=code, name=name, quantity=qty, price=price, amount=amount))
        plan.total += amount
    return list(plans.values())


def _started(run_id: str) -> sc.ExecuteResponse:
    return sc.ExecuteResponse(success=False, executed_orders=0, total_investment=0, strategies_created=0,
                              message="flow run started", run_id=run_id)  # fmt: skip


def price_lookup(runtime: Runtime) -> PriceLookup:
    """Current prices through the gateway with the asking user's own key (read-only), cached 5 s."""
    cache: dict[str, tuple[datetime, int]] = {}

    async def lookup(user_id: str, codes: list[str]) -> dict[str, int]:
        now = runtime.clock()
        out = {c: v for c, (at, v) in cache.items() if c in codes and now - at < timedelta(seconds=5)}
        missing = [c for c in codes if c not in out]
        accounts = runtime.accounts([user_id], trading_only=False) if missing else []
        if not accounts:
            return out  # the strategies view shows no current price rather than use someone else's key
        ref = AccountRef(accounts[0].user_id, accounts[0].account_no)
        try:
            broker = await runtime.brokers.for_account(ref, READ)
            for code in missing:
                out[code] = await broker.last_price(code)
                cache[code] = (now, out[code])
        except Exception as exc:  # the strategies view shows the entry price instead
            log.warning("current prices unavailable: %s", type(exc).__name__)
        return out

    return lookup


def session_key(runtime: Runtime) -> bytes:
    """The API's bearer-token signing key: the setting, or a 0600 key file in the data folder."""
    configured = runtime.settings.jwt_signing_key.get_secret_value()
    if configured:
        return configured.encode()
    from autotrade.secret_files import load_or_create_key

    return load_or_create_key(runtime.settings.data_dir / "keys" / "api-session.key")


def build_deps(runtime: Runtime) -> ApiDeps:
    from autotrade.api.limits import trusted_networks

    return ApiDeps(
        db=runtime.db,
        tokens=SessionTokens(session_key(runtime)),
        trusted_proxies=trusted_networks(runtime.settings.api_trusted_proxies),
        docs=runtime.settings.api_docs,
        registrar=GatewayRegistrar(runtime),
        execute=flow_runner(runtime, float(os.environ.get("AUTOTRADE_API_EXECUTE_WAIT_SECONDS", "20"))),
        prices=price_lookup(runtime),
    )
