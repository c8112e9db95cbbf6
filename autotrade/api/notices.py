"""What a user was told: the notices recorded in ``user_notices`` when they were sent (buy orders placed,
fills confirmed, exits armed; tasks/notifications.py), newest first, each with its stock and figures read
back from the order or the position it was about. Only the asking user's own notices."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from autotrade.api.app import ApiDeps, CurrentUser
from autotrade.domain.krx import KST
from autotrade.domain.models import average_of
from autotrade.store.models import OrderIntentRow, ThreeTierStrategy, TradingSignal, UserNotice

router = APIRouter(tags=["notifications"])


class NoticeOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"told_at": "2026-11-24T15:41:02+09:00", "trading_day": "2026-11-24",
                 "kind": "BUY_ORDERS_PLACED", "code": "005930", "name": "삼성전자", "quantity": 14,
                 "price": 70000}
            ]
        }
    )  # fmt: skip
    told_at: datetime = Field(description="when the notice was sent (KST)")
    trading_day: date
    kind: str = Field(description="BUY_ORDERS_PLACED, FILLS_CONFIRMED or EXITS_ARMED")
    code: str | None = None
    name: str | None = None
    quantity: int | None = Field(None, description="ordered, filled or held shares")
    price: int | None = Field(None, description="KRW: the order's limit, the average fill or the entry price")


def _parts(item: str) -> tuple[str, int | None, list[str]]:
    head, _, rest = item.partition(":")
    first, _, more = rest.partition(":")
    return head, int(first) if first.isdigit() else None, more.split(":") if more else []


@router.get("/api/me/notices", response_model=list[NoticeOut])
def my_notices(
    principal: CurrentUser, request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[NoticeOut]:
    """The notices you were sent, newest first: each buy order placed, each fill confirmed, each position's
    armed exit levels."""
    deps: ApiDeps = request.app.state.deps
    with deps.db.unit_of_work() as s:
        rows = s.scalars(
            sa.select(UserNotice)
            .where(UserNotice.user_id == principal.user_id)
            .order_by(UserNotice.told_at.desc(), UserNotice.id.desc())
            .limit(limit)
        ).all()
        parsed = [(n, *_parts(n.item)) for n in rows]
        intent_ids = {i for _, head, i, _ in parsed if head in ("order", "fill") and i is not None}
        strategy_ids = {i for _, head, i, _ in parsed if head == "armed" and i is not None}
        intents = {
            r[0]: r
            for r in s.execute(
                sa.select(
                    OrderIntentRow.id, OrderIntentRow.code, TradingSignal.name, OrderIntentRow.quantity,
                    OrderIntentRow.price, OrderIntentRow.filled_quantity, OrderIntentRow.filled_amount,
                )
                .join(TradingSignal, TradingSignal.id == OrderIntentRow.signal_id, isouter=True)
                .where(OrderIntentRow.id.in_(intent_ids), OrderIntentRow.user_id == principal.user_id)
            ).all()
        }  # fmt: skip
        strategies = {
            st.id: st
            for st in s.scalars(
                sa.select(ThreeTierStrategy).where(
                    ThreeTierStrategy.id.in_(strategy_ids), ThreeTierStrategy.user_id == principal.user_id
                )
            ).all()
        }
        out: list[NoticeOut] = []
        for n, head, ref, rest in parsed:
            notice = NoticeOut(told_at=n.told_at.astimezone(KST), trading_day=n.trading_day, kind=n.kind)
            if head in ("order", "fill") and ref in intents:
                _, code, name, qty, price, filled_now, amount = intents[ref]
                notice.code, notice.name = code, name or code
                if head == "order":
                    notice.quantity, notice.price = qty, price
                else:  # the fill as told: the filled quantity then, its average price
                    filled = int(rest[0]) if rest and rest[0].isdigit() else 0
                    notice.quantity = filled
                    if filled and filled_now:  # the average fill price, rounded half up
                        notice.price = average_of(amount, filled_now)
            elif head == "armed" and ref in strategies:
                st = strategies[ref]
                notice.code, notice.name = st.code, st.name
                notice.quantity = int(rest[0]) if rest and rest[0].isdigit() else st.held_quantity
                notice.price = st.entry_price
            out.append(notice)
        return out
