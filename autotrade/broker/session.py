"""The per-app-key Kiwoom API the rest of the product uses.

Retry policy, which is the point of this module:

* queries (account, inquiries, quotes) are resent with exponential backoff and jitter on any
  ``retry_safe`` error (rate limit, 5xx, timeout, connection), up to the client's ``max_query_retries``;
* orders are sent once. The only resends are those the broker guarantees are harmless: after a rejected
  token (re-issued once) and after a rate-limit reject, neither of which the broker processed. A timeout
  or 5xx on an order raises with ``outcome_unknown`` and the order service's exactly-once protocol
  (DESIGN 3.4) reconciles before anything is sent again;
* a rejected token triggers exactly one re-issue and one resend, for queries and orders alike.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from autotrade.broker.client import KiwoomClient, Page, parse_error
from autotrade.broker.errors import BrokerError, RateLimitError, TokenExpiredError
from autotrade.broker.messages import (
    AccountEvaluation,
    AccountNumbers,
    AccountNumbersRequest,
    CancelRequest,
    Deposit,
    DepositRequest,
    EvaluationRequest,
    Exchange,
    FilledOrder,
    FilledRequest,
    HoldingsReport,
    HoldingsRequest,
    ModifyRequest,
    OrderAck,
    OrderRequest,
    Quote,
    QuoteRequest,
    TradeType,
    UnfilledOrder,
    UnfilledRequest,
    WireRequest,
    normalise_code,
)
from autotrade.broker.tokens import TokenProvider

log = logging.getLogger(__name__)

ORDER_PATH = "/api/dostk/ordr"
ACCOUNT_PATH = "/api/dostk/acnt"
STOCK_INFO_PATH = "/api/dostk/stkinfo"

Model = TypeVar("Model", bound=BaseModel)


class KiwoomSession:
    """One user's app key: orders, account and quotes, with that key's token and rate budget."""

    def __init__(
        self,
        client: KiwoomClient,
        key_id: str,
        token_provider: TokenProvider,
        *,
        exchange: Exchange = Exchange.KRX,
        order_rate_limit_resends: int = 1,
        max_pages: int = 50,
    ) -> None:
        self.client = client
        self.key_id = key_id
        self.exchange = exchange
        self._tokens = token_provider
        self._order_rate_limit_resends = order_rate_limit_resends
        self._max_pages = max_pages

    def __repr__(self) -> str:
        return f"KiwoomSession(key_id={self.key_id!r})"

    # -----------------------------------------------------------------------------------------------------
    # Orders: never blindly retried

    async def buy(
        self,
        code: str,
        quantity: int,
        price: int | None,
        trade_type: TradeType = TradeType.LIMIT,
        *,
        stop_price: int | None = None,
    ) -> OrderAck:
        return await self._place("kt10000", code, quantity, price, trade_type, stop_price)

    async def sell(
        self,
        code: str,
        quantity: int,
        price: int | None,
        trade_type: TradeType = TradeType.LIMIT,
        *,
        stop_price: int | None = None,
    ) -> OrderAck:
        return await self._place("kt10001", code, quantity, price, trade_type, stop_price)

    async def modify(
        self, orig_order_no: str, code: str, quantity: int, price: int, *, stop_price: int | None = None
    ) -> OrderAck:
        """kt10002: move ``quantity`` open shares (0: all that remain) to ``price`` under a new order number;
        for a stop-limit order ``stop_price`` moves its trigger (``mdfy_cond_uv``)."""
        request = ModifyRequest(
            dmst_stex_tp=self.exchange,
            orig_ord_no=orig_order_no,
            stk_cd=_code(code),
            mdfy_qty=quantity,
            mdfy_uv=price,
            mdfy_cond_uv=stop_price,
        )
        return await self._order("kt10002", request)

    async def cancel(self, orig_order_no: str, code: str, quantity: int = 0) -> OrderAck:
        """Cancel ``quantity`` shares of an order; 0 cancels everything that remains."""
        request = CancelRequest(
            dmst_stex_tp=self.exchange, orig_ord_no=orig_order_no, stk_cd=_code(code), cncl_qty=quantity
        )
        return await self._order("kt10003", request)

    async def _place(
        self,
        api_id: str,
        code: str,
        quantity: int,
        price: int | None,
        trade_type: TradeType,
        stop_price: int | None,
    ) -> OrderAck:
        if trade_type.needs_price and (price is None or price <= 0):
            raise ValueError(f"trade type {trade_type.name} needs a positive price")
        if not trade_type.needs_price and price is not None:
            raise ValueError(f"trade type {trade_type.name} is priced by the exchange; pass price=None")
        if (trade_type is TradeType.STOP_LIMIT) != (stop_price is not None):
            raise ValueError("stop_price goes with TradeType.STOP_LIMIT and only with it")
        request = OrderRequest(
            dmst_stex_tp=self.exchange,
            stk_cd=_code(code),
            ord_qty=quantity,
            ord_uv=price,
            trde_tp=trade_type,
            cond_uv=stop_price,
        )
        return await self._order(api_id, request)

    async def _order(self, api_id: str, request: WireRequest) -> OrderAck:
        resends = self._order_rate_limit_resends
        while True:
            try:
                page = await self._send_with_token(api_id, ORDER_PATH, request.wire(), None)
            except RateLimitError:
                # Rate-limited requests were not processed, so this resend cannot double an order.
                if resends <= 0:
                    raise
                resends -= 1
                await asyncio.sleep(self._backoff(1))
                continue
            except BrokerError as exc:
                log.warning("order %s for key %s failed: %s", api_id, self.key_id, exc)
                raise
            return _parse(OrderAck, page.body, api_id, is_order=True)

    # -----------------------------------------------------------------------------------------------------
    # Queries: retried when safe

    async def account_numbers(self) -> tuple[str, ...]:
        """ka00001: the account numbers this app key serves, digits only."""
        body = await self._query_one("ka00001", ACCOUNT_PATH, AccountNumbersRequest())
        return _parse(AccountNumbers, body, "ka00001").numbers

    async def account_name(self) -> str:
        """kt00004's ``acnt_nm`` (first page): the account's name at the broker, "" when it has none."""
        body = await self._query_one("kt00004", ACCOUNT_PATH, EvaluationRequest(dmst_stex_tp=self.exchange))
        return _parse(AccountEvaluation, body, "kt00004").account_name.strip()

    async def deposit(self) -> Deposit:
        body = await self._query_one("kt00001", ACCOUNT_PATH, DepositRequest())
        return _parse(Deposit, body, "kt00001")

    async def holdings(self) -> HoldingsReport:
        request = HoldingsRequest(dmst_stex_tp=self.exchange)
        pages = await self._query_pages("kt00018", ACCOUNT_PATH, request)
        rows = _rows(pages, HoldingsReport.LIST_KEY, "stk_cd")
        return _parse(HoldingsReport, {**pages[0], HoldingsReport.LIST_KEY: rows}, "kt00018")

    async def unfilled_orders(self, code: str | None = None) -> list[UnfilledOrder]:
        request = UnfilledRequest(all_stk_tp="0" if code is None else "1", stk_cd=_code(code) if code else "")
        pages = await self._query_pages("ka10075", ACCOUNT_PATH, request)
        rows = _rows(pages, UnfilledOrder.LIST_KEY, "ord_no")
        return [_parse(UnfilledOrder, row, "ka10075") for row in rows]

    async def filled_orders(self, code: str | None = None) -> list[FilledOrder]:
        request = FilledRequest(qry_tp="0" if code is None else "1", stk_cd=_code(code) if code else "")
        pages = await self._query_pages("ka10076", ACCOUNT_PATH, request)
        rows = _rows(pages, FilledOrder.LIST_KEY, "ord_no")
        return [_parse(FilledOrder, row, "ka10076") for row in rows]

    async def quote(self, code: str) -> Quote:
        body = await self._query_one("ka10001", STOCK_INFO_PATH, QuoteRequest(stk_cd=_code(code)))
        return _parse(Quote, body, "ka10001")

    async def _query_one(self, api_id: str, path: str, request: WireRequest) -> dict[str, Any]:
        page = await self._retrying(partial(self._send_with_token, api_id, path, request.wire(), None))
        return page.body

    async def _query_pages(self, api_id: str, path: str, request: WireRequest) -> list[dict[str, Any]]:
        """Every page of a list query, following ``cont-yn``/``next-key`` from the response headers."""
        body = request.wire()
        bodies: list[dict[str, Any]] = []
        next_key: str | None = None
        for _ in range(self._max_pages):
            page = await self._retrying(partial(self._send_with_token, api_id, path, body, next_key))
            bodies.append(page.body)
            if not page.has_next:
                return bodies
            next_key = page.next_key
        raise BrokerError(f"Kiwoom {api_id} returned more than {self._max_pages} pages; stopped")

    async def _retrying(self, send: Callable[[], Awaitable[Page]]) -> Page:
        attempt = 0
        while True:
            try:
                return await send()
            except TokenExpiredError:
                raise  # already refreshed and resent once by _send_with_token
            except BrokerError as exc:
                if not exc.retry_safe or attempt >= self.client.max_query_retries:
                    raise
                attempt += 1
                delay = self._backoff(attempt)
                log.info("retrying %s for key %s in %.2f s: %s", exc.api_id, self.key_id, delay, exc)
                await asyncio.sleep(delay)

    async def _send_with_token(
        self, api_id: str, path: str, body: dict[str, str], next_key: str | None
    ) -> Page:
        token = await self._tokens.token()
        try:
            return await self.client.request(
                api_id, path, body, token=token, key_id=self.key_id, next_key=next_key
            )
        except TokenExpiredError:
            # The broker refused the token, so it processed nothing: one fresh token, one resend.
            await self._tokens.invalidate(token)
            token = await self._tokens.token()
            return await self.client.request(
                api_id, path, body, token=token, key_id=self.key_id, next_key=next_key
            )

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with "equal jitter": half fixed, half random, so retries spread out."""
        ceiling = min(self.client.retry_max_delay, self.client.retry_base_delay * 2.0 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not cryptography


def _code(code: str) -> str:
    normalised = normalise_code(code)
    if len(normalised) != 6:
        raise ValueError(f"not a six-character KRX stock code: {code!r}")
    return normalised


def _rows(pages: list[dict[str, Any]], list_key: str, id_field: str) -> list[dict[str, Any]]:
    """The list rows of every page. Rows with an empty id are dropped: some inquiries pad an empty result
    with one blank row (third-party observation)."""
    rows: list[dict[str, Any]] = []
    for body in pages:
        for row in body.get(list_key) or []:
            if isinstance(row, dict) and str(row.get(id_field, "")).strip():
                rows.append(row)
    return rows


def _parse(model: type[Model], data: dict[str, Any], api_id: str, *, is_order: bool = False) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise parse_error(api_id, exc, is_order=is_order) from None
