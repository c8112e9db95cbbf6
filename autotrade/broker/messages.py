"""Typed Kiwoom REST messages (pydantic v2) with the wire's string-encoded numbers.

Kiwoom sends every number as a string, prices with a direction sign against the previous close
("+70100", "-160400"), quantities zero-padded ("000000012") and empty strings for "none". Price fields are
parsed with ``abs()`` because the sign is a direction marker, not a negative price; change fields
(``pred_pre``, ``flu_rt``) keep the sign. Response models name fields in English and read Kiwoom's names
through aliases, so the rest of the product never sees ``stk_cd`` or ``rmnd_qty``.

Requests keep Kiwoom's own field names (they are the documented wire) and are serialised by
:meth:`WireRequest.wire`, which turns every value into the string Kiwoom expects.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr

KST = timezone(timedelta(hours=9), "KST")

# ---------------------------------------------------------------------------------------------------------
# Wire number formats


def _digits(value: object) -> str:
    text = str(value).strip().replace(",", "")
    return text


def parse_signed_int(value: object) -> int:
    """A signed wire integer: "+70100" -> 70100, "-160400" -> -160400, "" -> 0."""
    if isinstance(value, int):
        return value
    text = _digits(value)
    if text in ("", "+", "-"):
        return 0
    return int(text)


def parse_price(value: object) -> int:
    """A price: the sign only marks direction against the previous close."""
    return abs(parse_signed_int(value))


def parse_decimal(value: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    text = _digits(value)
    if text in ("", "+", "-"):
        return Decimal(0)
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise ValueError("not a decimal number") from exc


_EXCHANGE_SUFFIX = re.compile(r"_(NX|AL)$")


def normalise_code(value: object) -> str:
    """A KRX short code: "A005930" -> "005930", "005930_NX" -> "005930"."""
    text = str(value).strip().upper()
    text = _EXCHANGE_SUFFIX.sub("", text)
    if len(text) == 7 and text.startswith("A"):
        text = text[1:]
    return text


def parse_hhmmss(value: object) -> time | None:
    text = str(value).strip()
    if len(text) != 6 or not text.isdigit():
        return None
    return time(int(text[:2]), int(text[2:4]), int(text[4:]))


def parse_kst_timestamp(value: object) -> datetime:
    """``%Y%m%d%H%M%S`` in KST (au10001 ``expires_dt``) -> aware datetime."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value
    return datetime.strptime(str(value).strip(), "%Y%m%d%H%M%S").replace(tzinfo=KST)


Price = Annotated[int, BeforeValidator(parse_price)]
Quantity = Annotated[int, BeforeValidator(parse_price)]  # zero-padded; never meaningfully signed
Won = Annotated[int, BeforeValidator(parse_signed_int)]  # amounts that can be negative (P&L)
Signed = Annotated[int, BeforeValidator(parse_signed_int)]
Rate = Annotated[Decimal, BeforeValidator(parse_decimal)]
StockCode = Annotated[str, BeforeValidator(normalise_code)]
TimeOfDay = Annotated[time | None, BeforeValidator(parse_hhmmss)]


# ---------------------------------------------------------------------------------------------------------
# Enums


class TradeType(StrEnum):
    """``trde_tp`` of kt10000/kt10001 (OFF buy_domestic_stock.py docstring)."""

    LIMIT = "0"  # 보통
    MARKET = "3"  # 시장가
    CONDITIONAL_LIMIT = "5"  # 조건부지정가: limit that becomes market at the closing auction
    BEST_LIMIT = "6"  # 최유리지정가
    TOP_PRIORITY_LIMIT = "7"  # 최우선지정가
    LIMIT_IOC = "10"
    MARKET_IOC = "13"
    BEST_LIMIT_IOC = "16"
    LIMIT_FOK = "20"
    MARKET_FOK = "23"
    BEST_LIMIT_FOK = "26"
    STOP_LIMIT = "28"  # 스톱지정가: cond_uv is the trigger
    MID_PRICE = "29"
    MID_PRICE_IOC = "30"
    MID_PRICE_FOK = "31"
    PRE_MARKET = "61"  # 장시작전시간외, 08:30-08:40 at the previous close
    AFTER_HOURS_SINGLE = "62"  # 시간외단일가, 16:00-18:00
    AFTER_HOURS_CLOSE = "81"  # 장마감후시간외, 15:40-16:00 at today's close

    @property
    def needs_price(self) -> bool:
        """Whether ``ord_uv`` must carry a price (the rest are priced by the exchange)."""
        return self in _PRICED


_PRICED = frozenset(
    {
        TradeType.LIMIT,
        TradeType.CONDITIONAL_LIMIT,
        TradeType.LIMIT_IOC,
        TradeType.LIMIT_FOK,
        TradeType.STOP_LIMIT,
        TradeType.AFTER_HOURS_SINGLE,
    }
)


class Exchange(StrEnum):
    KRX = "KRX"
    NXT = "NXT"
    SOR = "SOR"


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


def side_from_text(text: str) -> Side | None:
    """``io_tp_nm`` such as "+매수", "-매도", "매수정정", "매도취소"."""
    if "매수" in text or text.startswith("+"):
        return Side.BUY
    if "매도" in text or text.startswith("-"):
        return Side.SELL
    return None


# ---------------------------------------------------------------------------------------------------------
# Requests


class WireRequest(BaseModel):
    """A TR body: every value goes on the wire as a string, ``None`` as ""."""

    model_config = ConfigDict(frozen=True)

    def wire(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                out[name] = value.get_secret_value()
            elif value is None:
                out[name] = ""
            else:
                out[name] = str(value.value if isinstance(value, StrEnum) else value)
        return out


class TokenRequest(WireRequest):
    """au10001 body."""

    grant_type: str = "client_credentials"
    appkey: SecretStr
    secretkey: SecretStr


class RevokeRequest(WireRequest):
    """au10002 body."""

    appkey: SecretStr
    secretkey: SecretStr
    token: SecretStr


class OrderRequest(WireRequest):
    """kt10000 buy / kt10001 sell."""

    dmst_stex_tp: Exchange = Exchange.KRX
    stk_cd: str
    ord_qty: int = Field(gt=0)
    ord_uv: int | None = None  # "" for priced-by-exchange order types
    trde_tp: TradeType
    cond_uv: int | None = None


class ModifyRequest(WireRequest):
    """kt10002."""

    dmst_stex_tp: Exchange = Exchange.KRX
    orig_ord_no: str
    stk_cd: str
    mdfy_qty: int = Field(ge=0)
    mdfy_uv: int = Field(gt=0)
    mdfy_cond_uv: int | None = None


class CancelRequest(WireRequest):
    """kt10003; ``cncl_qty`` 0 cancels all that remains."""

    dmst_stex_tp: Exchange = Exchange.KRX
    orig_ord_no: str
    stk_cd: str
    cncl_qty: int = Field(ge=0)


class DepositRequest(WireRequest):
    """kt00001; ``qry_tp`` 3 = estimated (추정조회), 2 = plain (일반조회)."""

    qry_tp: str = "3"


class AccountNumbersRequest(WireRequest):
    """ka00001 계좌번호조회: an empty body; the token says whose accounts."""


class EvaluationRequest(WireRequest):
    """kt00004 계좌평가현황; ``qry_tp`` 0 = all (전체), 1 = without delisted stocks."""

    qry_tp: str = "0"
    dmst_stex_tp: Exchange = Exchange.KRX


class HoldingsRequest(WireRequest):
    """kt00018; ``qry_tp`` 1 = summed (합산), 2 = per lot (개별)."""

    qry_tp: str = "1"
    dmst_stex_tp: Exchange = Exchange.KRX


class UnfilledRequest(WireRequest):
    """ka10075; ``trde_tp`` here is 0 all / 1 sell / 2 buy, ``stex_tp`` 0 unified / 1 KRX / 2 NXT."""

    all_stk_tp: str = "0"
    trde_tp: str = "0"
    stk_cd: str = ""
    stex_tp: str = "0"


class FilledRequest(WireRequest):
    """ka10076; ``ord_no`` pages older than that order number when set."""

    stk_cd: str = ""
    qry_tp: str = "0"
    sell_tp: str = "0"
    ord_no: str = ""
    stex_tp: str = "0"


class QuoteRequest(WireRequest):
    """ka10001."""

    stk_cd: str


# ---------------------------------------------------------------------------------------------------------
# Responses


class KiwoomModel(BaseModel):
    """Reads Kiwoom's names through aliases; unknown fields are ignored (Kiwoom adds fields freely)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


def _lower(value: object) -> str:
    return str(value).lower()


class Credentials(BaseModel):
    """A user's app key and secret, as decrypted from the vault for the moment a token is issued."""

    model_config = ConfigDict(frozen=True)

    app_key: SecretStr
    app_secret: SecretStr


class IssuedToken(KiwoomModel):
    """au10001 answer. ``token_type`` case varies; the client always sends ``Bearer`` itself."""

    token: SecretStr = Field(min_length=1)
    token_type: Annotated[str, BeforeValidator(_lower)] = "bearer"  # noqa: S105 - a scheme name
    expires_at: Annotated[datetime, BeforeValidator(parse_kst_timestamp)] = Field(alias="expires_dt")


class OrderAck(KiwoomModel):
    """kt10000-kt10003 answer: the (new) order number."""

    order_no: str = Field(alias="ord_no", min_length=1)
    orig_order_no: str | None = Field(None, alias="base_orig_ord_no")
    exchange: str = Field("", alias="dmst_stex_tp")


class Deposit(KiwoomModel):
    """kt00001, the amounts the product uses."""

    cash: Won = Field(alias="entr")  # 예수금
    orderable: Won = Field(alias="ord_alow_amt")  # 주문가능금액
    withdrawable: Won = Field(0, alias="pymn_alow_amt")  # 출금가능금액
    d1_cash: Won = Field(0, alias="d1_entra")
    d2_cash: Won = Field(0, alias="d2_entra")
    orderable_100pct: Won = Field(0, alias="100stk_ord_alow_amt")  # 100% 종목증거금률 주문가능금액


def _account_numbers(value: object) -> tuple[str, ...]:
    """``acctNo`` is one number in every public sample; a list or ``;``-separated text (as the old OpenAPI's
    ACCNO) is read too, since a key serving several accounts has not been observed (UNCONFIRMED)."""
    items = value if isinstance(value, list | tuple) else str(value or "").replace(",", ";").split(";")
    return tuple(n for n in (account_digits(str(i)) for i in items) if n)


def account_digits(account_no: str) -> str:
    """An account number as digits only ("5012-3456-78" and "50123456-78" are both "5012345678")."""
    return "".join(c for c in account_no if c.isdigit())


class AccountNumbers(KiwoomModel):
    """ka00001 answer: the account numbers the app key serves (digits only)."""

    numbers: Annotated[tuple[str, ...], BeforeValidator(_account_numbers)] = Field((), alias="acctNo")


class AccountEvaluation(KiwoomModel):
    """kt00004 answer, the account's name only (``acnt_nm``, 계좌명)."""

    account_name: str = Field("", alias="acnt_nm")


class Holding(KiwoomModel):
    """One row of kt00018 ``acnt_evlt_remn_indv_tot``."""

    code: StockCode = Field(alias="stk_cd")
    name: str = Field("", alias="stk_nm")
    quantity: Quantity = Field(alias="rmnd_qty")
    tradable_quantity: Quantity = Field(alias="trde_able_qty")
    avg_price: Price = Field(alias="pur_pric")
    current_price: Price = Field(alias="cur_prc")
    purchase_amount: Won = Field(0, alias="pur_amt")
    evaluation_amount: Won = Field(0, alias="evlt_amt")
    profit_loss: Won = Field(0, alias="evltv_prft")
    profit_rate: Rate = Field(Decimal(0), alias="prft_rt")


class HoldingsReport(KiwoomModel):
    """kt00018 totals with every page's rows."""

    LIST_KEY: ClassVar[str] = "acnt_evlt_remn_indv_tot"

    total_purchase: Won = Field(0, alias="tot_pur_amt")
    total_evaluation: Won = Field(0, alias="tot_evlt_amt")
    total_profit_loss: Won = Field(0, alias="tot_evlt_pl")
    total_profit_rate: Rate = Field(Decimal(0), alias="tot_prft_rt")
    estimated_assets: Won = Field(0, alias="prsm_dpst_aset_amt")
    holdings: tuple[Holding, ...] = Field((), alias="acnt_evlt_remn_indv_tot")


class UnfilledOrder(KiwoomModel):
    """One row of ka10075 ``oso``."""

    LIST_KEY: ClassVar[str] = "oso"

    order_no: str = Field(alias="ord_no")
    code: StockCode = Field(alias="stk_cd")
    name: str = Field("", alias="stk_nm")
    status: str = Field("", alias="ord_stt")  # 접수, 확인, 체결 … (text UNCONFIRMED)
    quantity: Quantity = Field(alias="ord_qty")
    price: Price = Field(0, alias="ord_pric")
    unfilled_quantity: Quantity = Field(alias="oso_qty")
    filled_amount: Won = Field(0, alias="cntr_tot_amt")
    orig_order_no: str = Field("", alias="orig_ord_no")
    side_text: str = Field("", alias="io_tp_nm")
    trade_type_text: str = Field("", alias="trde_tp")
    time: TimeOfDay = Field(None, alias="tm")
    last_fill_price: Price = Field(0, alias="cntr_pric")
    last_fill_quantity: Quantity = Field(0, alias="cntr_qty")
    current_price: Price = Field(0, alias="cur_prc")
    stop_price: Price = Field(0, alias="stop_pric")

    @property
    def side(self) -> Side | None:
        return side_from_text(self.side_text)


class FilledOrder(KiwoomModel):
    """One row of ka10076 ``cntr``."""

    LIST_KEY: ClassVar[str] = "cntr"

    order_no: str = Field(alias="ord_no")
    code: StockCode = Field(alias="stk_cd")
    name: str = Field("", alias="stk_nm")
    side_text: str = Field("", alias="io_tp_nm")
    price: Price = Field(0, alias="ord_pric")
    quantity: Quantity = Field(alias="ord_qty")
    fill_price: Price = Field(0, alias="cntr_pric")
    filled_quantity: Quantity = Field(0, alias="cntr_qty")
    unfilled_quantity: Quantity = Field(0, alias="oso_qty")
    fee: Won = Field(0, alias="tdy_trde_cmsn")
    tax: Won = Field(0, alias="tdy_trde_tax")
    status: str = Field("", alias="ord_stt")
    trade_type_text: str = Field("", alias="trde_tp")
    orig_order_no: str = Field("", alias="orig_ord_no")
    time: TimeOfDay = Field(None, alias="ord_tm")
    stop_price: Price = Field(0, alias="stop_pric")

    @property
    def side(self) -> Side | None:
        return side_from_text(self.side_text)


class Quote(KiwoomModel):
    """ka10001 basic stock info: the fields the product uses."""

    code: StockCode = Field(alias="stk_cd")
    name: str = Field("", alias="stk_nm")
    price: Price = Field(alias="cur_prc")
    change: Signed = Field(0, alias="pred_pre")
    change_rate: Rate = Field(Decimal(0), alias="flu_rt")
    volume: Quantity = Field(0, alias="trde_qty")
    open: Price = Field(0, alias="open_pric")
    high: Price = Field(0, alias="high_pric")
    low: Price = Field(0, alias="low_pric")
    base_price: Price = Field(0, alias="base_pric")  # previous close
    upper_limit: Price = Field(0, alias="upl_pric")
    lower_limit: Price = Field(0, alias="lst_pric")
