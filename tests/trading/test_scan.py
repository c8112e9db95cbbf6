"""Scan intake and validation: good scans pass, bad scans are rejected whole with a readable report."""

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autotrade.domain.krx import KST
from autotrade.trading.scan import (
    MAX_BYTES,
    ScanFormatError,
    parse_scan_bytes,
    parse_scan_payload,
    read_scan,
    validate_scan,
)

DAY = date(2026, 11, 25)
NOW = datetime(2026, 11, 25, 15, 40, tzinfo=KST)
GOOD_ROWS: list[dict[str, Any]] = [
    {"code": "005930", "name": "삼성전자", "score": 8.5, "current_price": 70_000, "reasons": ["상승시작"]},
    {"code": "000660", "name": "SK하이닉스", "score": 7.2, "current_price": 185_000, "reasons": []},
    {"code": "035720", "name": "카카오", "score": 6.1, "current_price": 41_250},
]


def payload(rows: list[dict[str, Any]] | None = None, **meta: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"trading_day": "2026-11-25", "generated_at": "2026-11-25T15:36:00+09:00"}
    body.update(meta)
    body["scan_results"] = GOOD_ROWS if rows is None else rows
    return body


def check(raw_payload: dict[str, Any]) -> Any:
    return validate_scan(parse_scan_payload(raw_payload), trading_day=DAY, now=NOW)


def test_good_scan_is_accepted() -> None:
    v = check(payload())
    assert v.success, v.report()
    assert [r.code for r in v.rows] == ["005930", "000660", "035720"]
    assert v.rows[0].price == 70_000 and v.rows[0].reasons == ("상승시작",)


@pytest.mark.parametrize(
    ("mutate", "rule"),
    [
        (lambda r: r[0].update(code="5930"), "expect_column_values_to_match_regex"),
        (lambda r: r[1].update(code="005930"), "expect_column_values_to_be_unique"),
        (lambda r: r[0].update(score=11), "expect_column_values_to_be_between"),
        (lambda r: r[0].update(name=""), "expect_column_value_lengths_to_be_between"),
        (lambda r: r[0].update(current_price=70_050), "expect_column_values_to_be_in_set"),  # not a tick
        (lambda r: r[0].update(current_price=-100), "expect_column_values_to_be_between"),
        (lambda r: r[0].update(score="high"), "type_score"),
        (lambda r: r[0].update(current_price=70_000.5), "type_price"),
        (lambda r: r[0].pop("name"), "required_fields"),
        (lambda r: [x.pop("score") for x in r], "required_columns"),
    ],
)
def test_each_rule_rejects_with_rows_named(mutate: Any, rule: str) -> None:
    rows = [dict(r) for r in GOOD_ROWS]
    mutate(rows)
    v = check(payload(rows))
    assert not v.success and v.rows == ()
    assert rule in {i.rule for i in v.issues}, v.report()
    assert "REJECTED" in v.report() and rule in v.report()


def test_report_names_the_offending_rows() -> None:
    rows = [dict(r) for r in GOOD_ROWS]
    rows[2]["code"] = "ABC"
    v = check(payload(rows))
    [issue] = [i for i in v.issues if i.rule == "expect_column_values_to_match_regex"]
    assert issue.rows == (2,) and issue.values == ("ABC",)


@pytest.mark.parametrize(
    ("meta", "rule"),
    [
        ({"trading_day": "2026-11-24"}, "trading_day"),
        ({"trading_day": None}, "trading_day"),
        ({"generated_at": "2026-11-25T09:00:00+09:00"}, "fresh"),  # 6h40m old
        ({"generated_at": "2026-11-25T17:00:00+09:00"}, "fresh"),  # in the future
    ],
)
def test_stale_or_wrong_day_is_rejected(meta: dict[str, Any], rule: str) -> None:
    v = check(payload(**meta))
    assert not v.success and rule in {i.rule for i in v.issues}


def test_empty_scan_is_rejected() -> None:
    v = check(payload([]))
    assert not v.success and v.issues[0].rule == "non_empty"


def test_files_folder_and_csv(tmp_path: Path) -> None:
    (tmp_path / "scan_20261124.json").write_text(json.dumps(payload(trading_day="2026-11-24")))
    csv_text = "scan_date,code,name,score,current_price,reasons\n"
    csv_text += (
        "2026-11-25,005930,삼성전자,8.5,70000,상승시작|거래량증가\n2026-11-25,000660,SK하이닉스,7.2,185000,\n"
    )
    (tmp_path / "scan_20261125.csv").write_text(csv_text, encoding="utf-8")
    raw = read_scan(tmp_path, DAY)
    assert raw.source.endswith("scan_20261125.csv") and raw.trading_day == DAY
    v = validate_scan(raw, trading_day=DAY, now=NOW)
    assert v.success, v.report()
    assert v.rows[0].reasons == ("상승시작", "거래량증가")


@pytest.mark.parametrize(
    "content",
    [b"", b"{not json", b'{"scan_results": 3}', b"[1, 2]", b"x" * (MAX_BYTES + 1)],
)
def test_unreadable_content_raises_format_error(content: bytes) -> None:
    with pytest.raises(ScanFormatError):
        parse_scan_bytes(content, "test")


def test_s3_prefix(tmp_path: Path) -> None:
    """The newest scan under an S3 prefix, through moto's in-process S3."""
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="ap-northeast-2")
        s3.create_bucket(Bucket="scans", CreateBucketConfiguration={"LocationConstraint": "ap-northeast-2"})
        s3.put_object(Bucket="scans", Key="daily/scan_20261125.json", Body=json.dumps(payload()).encode())
        raw = read_scan("s3://scans/daily/", DAY)
    assert raw.source == "s3://scans/daily/scan_20261125.json"
    assert validate_scan(raw, trading_day=DAY, now=NOW).success


# --- hypothesis: arbitrary damage to a good scan is always rejected, never ordered -----------------------

FIELDS = ["code", "name", "score", "current_price"]
junk = st.one_of(
    st.none(), st.text(max_size=8), st.integers(-10**13, 10**13), st.floats(allow_nan=True),
    st.booleans(), st.lists(st.integers(), max_size=2),
)  # fmt: skip


@st.composite
def damaged_scans(draw: st.DrawFn) -> dict[str, Any]:
    rows = [dict(r) for r in GOOD_ROWS]
    kind = draw(st.sampled_from(["drop", "junk", "dup", "stale", "price"]))
    i = draw(st.integers(0, len(rows) - 1))
    if kind == "drop":
        rows[i].pop(draw(st.sampled_from(FIELDS)))
    elif kind == "junk":
        field = draw(st.sampled_from(FIELDS))
        value = draw(junk.filter(lambda v: v != rows[i][field]))
        rows[i][field] = value
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if field == "score" and is_number and 0 <= value <= 10:
            rows[i]["score"] = 10.5  # a number in range is not damage
        if field == "current_price" and isinstance(value, int) and not isinstance(value, bool):
            rows[i]["current_price"] = -abs(value) - 1
        if field == "name" and isinstance(value, str) and value.strip():
            rows[i]["name"] = ""
        if field == "code" and isinstance(value, str) and len(value.strip()) == 6:
            rows[i]["code"] = value.strip() + "!"
    elif kind == "dup":
        rows.append(dict(rows[i]))
    elif kind == "stale":
        days = draw(st.integers(1, 400))
        return payload(rows, trading_day=(DAY - timedelta(days=days)).isoformat())
    else:
        rows[i]["current_price"] = draw(st.sampled_from([0, -1, 10**9, 70_001, 12_345_678_901]))
    return payload(rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_scans())
def test_damaged_scans_are_rejected(bad: dict[str, Any]) -> None:
    v = check(bad)
    assert not v.success, bad
    assert v.rows == () and v.issues
    assert "REJECTED" in v.report()
