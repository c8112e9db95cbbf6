"""Wire formats: signed string numbers, stock codes, request serialisation, secrets in reprs."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import SecretStr, ValidationError

from autotrade.broker.messages import (
    KST,
    CancelRequest,
    Credentials,
    FilledOrder,
    Holding,
    IssuedToken,
    OrderRequest,
    Quote,
    Side,
    TokenRequest,
    TradeType,
    normalise_code,
    parse_decimal,
    parse_price,
    parse_signed_int,
)


@pytest.mark.parametrize(
    ("raw", "price", "signed"),
    [
        ("+70100", 70100, 70100),
        ("-160400", 160400, -160400),
        ("000000012", 12, 12),
        ("", 0, 0),
        ("0", 0, 0),
        ("-0000050000", 50000, -50000),
        (1234, 1234, 1234),
    ],
)
def test_numbers(raw: object, price: int, signed: int) -> None:
    assert parse_price(raw) == price
    assert parse_signed_int(raw) == signed


def test_rates_keep_sign_as_decimal() -> None:
    assert parse_decimal("-1.27") == Decimal("-1.27")
    assert parse_decimal("+0.24") == Decimal("0.24")
    assert parse_decimal("") == Decimal(0)
    with pytest.raises(ValueError):
        parse_decimal("abc")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("A005930", "005930"),
        ("005930", "005930"),
        (" 005930 ", "005930"),
        ("005930_NX", "005930"),
        ("005930_AL", "005930"),
        ("a000660", "000660"),
        ("0126Z0", "0126Z0"),
    ],
)
def test_codes(raw: str, code: str) -> None:
    assert normalise_code(raw) == code


def test_token_response_expiry_is_kst_and_aware() -> None:
    issued = IssuedToken.model_validate(
        {"return_code": 0, "token": "T", "token_type": "BEARER", "expires_dt": "20260206140112"}
    )
    assert issued.expires_at == datetime(2026, 2, 6, 5, 1, 12, tzinfo=UTC)
    assert issued.expires_at.utcoffset() == KST.utcoffset(None)
    assert issued.token_type == "bearer"


def test_token_response_without_token_is_invalid() -> None:
    with pytest.raises(ValidationError):
        IssuedToken.model_validate({"token": "", "expires_dt": "20260206140112"})


def test_order_request_wire_is_all_strings_market_price_empty() -> None:
    wire = OrderRequest(stk_cd="005930", ord_qty=3, trde_tp=TradeType.MARKET).wire()
    assert wire == {
        "dmst_stex_tp": "KRX",
        "stk_cd": "005930",
        "ord_qty": "3",
        "ord_uv": "",
        "trde_tp": "3",
        "cond_uv": "",
    }
    limit = OrderRequest(stk_cd="005930", ord_qty=1, ord_uv=70100, trde_tp=TradeType.AFTER_HOURS_CLOSE).wire()
    assert limit["ord_uv"] == "70100" and limit["trde_tp"] == "81"


def test_cancel_all_is_zero() -> None:
    assert CancelRequest(orig_ord_no="0000101", stk_cd="005930", cncl_qty=0).wire()["cncl_qty"] == "0"


def test_trade_type_codes() -> None:
    assert [
        TradeType.LIMIT,
        TradeType.MARKET,
        TradeType.PRE_MARKET,
        TradeType.AFTER_HOURS_SINGLE,
        TradeType.AFTER_HOURS_CLOSE,
    ] == ["0", "3", "61", "62", "81"]
    assert TradeType.LIMIT.needs_price and not TradeType.MARKET.needs_price
    assert not TradeType.AFTER_HOURS_CLOSE.needs_price and TradeType.AFTER_HOURS_SINGLE.needs_price


def test_holding_row() -> None:
    row = Holding.model_validate(
        {
            "stk_cd": "A005930",
            "stk_nm": "삼성전자",
            "rmnd_qty": "000000000010",
            "trde_able_qty": "000000000008",
            "pur_pric": "+000000070000",
            "cur_prc": "-000000071000",
            "evltv_prft": "-000000010000",
            "prft_rt": "-1.43",
            "unknown_new_field": "x",
        }
    )
    assert (row.code, row.quantity, row.tradable_quantity, row.avg_price, row.current_price) == (
        "005930",
        10,
        8,
        70000,
        71000,
    )
    assert row.profit_loss == -10000 and row.profit_rate == Decimal("-1.43")


def test_quote_keeps_signed_change() -> None:
    q = Quote.model_validate({"stk_cd": "005930", "cur_prc": "-70100", "pred_pre": "-900", "flu_rt": "-1.27"})
    assert (q.price, q.change, q.change_rate) == (70100, -900, Decimal("-1.27"))


@pytest.mark.parametrize(
    ("text", "side"),
    [("+매수", Side.BUY), ("-매도", Side.SELL), ("매수정정", Side.BUY), ("매도취소", Side.SELL), ("", None)],
)
def test_side_from_text(text: str, side: Side | None) -> None:
    row = FilledOrder.model_validate({"ord_no": "1", "stk_cd": "005930", "ord_qty": "1", "io_tp_nm": text})
    assert row.side == side


def test_secrets_are_masked_in_reprs() -> None:
    creds = Credentials(app_key=SecretStr("APPKEY-X"), app_secret=SecretStr("SECRET-X"))
    request = TokenRequest(appkey=creds.app_key, secretkey=creds.app_secret)
    token = IssuedToken.model_validate({"token": "TOKEN-X", "expires_dt": "20260206140112"})
    for obj in (creds, request, token):
        assert "-X" not in repr(obj) and "-X" not in str(obj)
        assert "-X" not in obj.model_dump_json()
    assert request.wire()["secretkey"] == "SECRET-X"  # only the wire form reveals it
