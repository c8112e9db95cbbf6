"""Scan intake that waits: the evening run polls for the day's scan until a deadline, through a missing
file, a file still being written, yesterday's scan and S3 errors, and then fails saying what it saw."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from autotrade.domain.krx import KST
from autotrade.trading.scan import ScanUnavailable, wait_for_scan

DAY = date(2026, 11, 25)
START = datetime(2026, 11, 25, 15, 40, tzinfo=KST)
ROWS = [
    {"code": "005930", "name": "삼성전자", "score": 8.5, "current_price": 70_000, "reasons": ["상승시작"]},
]


def scan_json(day: date = DAY) -> str:
    return json.dumps(
        {"trading_day": day.isoformat(), "generated_at": f"{day}T15:36:00+09:00", "scan_results": ROWS},
        ensure_ascii=False,
    )


class Clock:
    """Virtual time: ``wait_until`` moves it, and runs ``on_wait[n]`` at the n-th wait (what happened at
    the scan's location meanwhile)."""

    def __init__(self, on_wait: dict[int, Callable[[], None]] | None = None) -> None:
        self.now = START
        self.waits: list[datetime] = []
        self.on_wait = on_wait or {}

    def __call__(self) -> datetime:
        return self.now

    async def wait_until(self, moment: datetime) -> None:
        assert moment > self.now
        self.waits.append(moment)
        self.now = moment
        action = self.on_wait.get(len(self.waits))
        if action is not None:
            action()


def wait(location: str | Path, clock: Clock, minutes: float = 5) -> object:
    return asyncio.run(
        wait_for_scan(
            location, DAY, deadline=START + timedelta(minutes=minutes), poll_seconds=30,
            clock=clock, wait_until=clock.wait_until,
        )
    )


def test_a_scan_written_during_the_wait_is_read_once_complete(tmp_path: Path) -> None:
    target = tmp_path / "scan_20261125.json"
    full = scan_json()
    clock = Clock(
        {
            2: lambda: target.write_text(full[: len(full) // 2], encoding="utf-8"),  # still being written
            4: lambda: target.write_text(full, encoding="utf-8"),
        }
    )
    raw = wait(tmp_path, clock)
    assert raw.source == str(target) and raw.trading_day == DAY  # type: ignore[attr-defined]
    # nothing there (1, 2), half a file (3, 4), read after the 4th wait: 4 waits of 30 s
    assert clock.waits == [START + timedelta(seconds=30 * i) for i in range(1, 5)]


def test_yesterdays_scan_is_not_taken_for_todays(tmp_path: Path) -> None:
    (tmp_path / "scan_20261124.json").write_text(scan_json(date(2026, 11, 24)), encoding="utf-8")
    clock = Clock({3: lambda: (tmp_path / "scan_20261125.json").write_text(scan_json(), encoding="utf-8")})
    raw = wait(tmp_path, clock)
    assert raw.trading_day == DAY and len(clock.waits) == 3  # type: ignore[attr-defined]


def test_no_scan_by_the_deadline_fails_saying_where_and_what(tmp_path: Path) -> None:
    (tmp_path / "scan_20261124.json").write_text(scan_json(date(2026, 11, 24)), encoding="utf-8")
    clock = Clock()
    with pytest.raises(ScanUnavailable) as caught:
        wait(tmp_path, clock, minutes=5)
    message = str(caught.value)
    # 5 minutes every 30 s: 10 waits, 11 attempts (the last at 15:45 itself)
    assert len(clock.waits) == 10 and clock.now == START + timedelta(minutes=5)
    assert message.startswith(f"no readable scan of 2026-11-25 at {tmp_path} by 15:45 KST (11 attempts")
    assert "is of 2026-11-24" in message


def test_s3_errors_are_waited_out(tmp_path: Path) -> None:
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="ap-northeast-2")

        def bucket() -> None:  # the bucket is not there at first: NoSuchBucket, an S3 error
            where = {"LocationConstraint": "ap-northeast-2"}
            s3.create_bucket(Bucket="scans", CreateBucketConfiguration=where)

        def upload() -> None:
            s3.put_object(Bucket="scans", Key="daily/scan_20261125.json", Body=scan_json().encode())

        clock = Clock({1: bucket, 2: upload})
        raw = wait("s3://scans/daily/", clock)
    assert raw.source == "s3://scans/daily/scan_20261125.json" and len(clock.waits) == 2  # type: ignore[attr-defined]
