"""Scan intake: read the AI scan from a file, a folder, S3 or an API payload, and validate it whole.

A batch that fails any rule is rejected whole with a readable report (which rows, which rule) and nothing
is ordered from it. Rules live in ``scan_suite.json`` (Great Expectations, imported lazily: the import alone
takes seconds) plus the checks that are about the batch rather than its rows: the file is not absurdly
large, it parses, its trading day is today's and it is fresh.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from autotrade.domain.krx import KST, is_valid_tick
from autotrade.domain.models import ScanRow, require_aware

log = logging.getLogger(__name__)

SUITE_PATH = Path(__file__).with_name("scan_suite.json")
MAX_BYTES = 5 * 1024 * 1024
MAX_ROWS = 5_000
REQUIRED = ("code", "name", "score", "price")


class ScanFormatError(ValueError):
    """The scan could not be read at all (not JSON/CSV, wrong shape, too large)."""


@dataclass(frozen=True, slots=True)
class RawScan:
    """A scan as received, before validation."""

    rows: list[dict[str, Any]]
    source: str
    trading_day: date | None = None
    generated_at: datetime | None = None
    content: bytes = b""

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True, slots=True)
class Issue:
    rule: str
    detail: str
    rows: tuple[int, ...] = ()
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ScanValidation:
    success: bool
    rows: tuple[ScanRow, ...]
    issues: tuple[Issue, ...] = field(default=())
    row_count: int = 0

    def report(self) -> str:
        """A short markdown report: the verdict, then one line per failed rule with its rows."""
        head = f"**scan {'accepted' if self.success else 'REJECTED'}**: {self.row_count} rows"
        if self.success:
            return head
        lines = [head, "", "| rule | detail | rows (0-based) | values |", "|---|---|---|---|"]
        for i in self.issues:
            rows = ", ".join(map(str, i.rows[:20])) + (" ..." if len(i.rows) > 20 else "")
            vals = ", ".join(v[:40] for v in i.values[:10]) + (" ..." if len(i.values) > 10 else "")
            lines.append(f"| {i.rule} | {i.detail} | {rows} | {vals} |")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(
            {
                "success": self.success,
                "row_count": self.row_count,
                "issues": [
                    {"rule": i.rule, "detail": i.detail, "rows": list(i.rows), "values": list(i.values)}
                    for i in self.issues
                ],
            },
            ensure_ascii=False,
        )


# --- reading ---------------------------------------------------------------------------------------------


def parse_scan_bytes(content: bytes, source: str) -> RawScan:
    """JSON (a list of rows, or an object with ``scan_results``) or CSV, detected from the content."""
    if len(content) > MAX_BYTES:
        raise ScanFormatError(f"scan is {len(content):,} bytes; the limit is {MAX_BYTES:,}")
    try:
        text = content.decode("utf-8-sig", errors="strict").strip()
    except UnicodeDecodeError as exc:
        raise ScanFormatError(f"scan is not UTF-8 text (byte {exc.start})") from None
    if not text:
        raise ScanFormatError("scan is empty")
    if text[0] in "[{":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ScanFormatError(f"scan is not valid JSON: {exc.msg} at line {exc.lineno}") from None
        except (ValueError, RecursionError) as exc:  # a number of thousands of digits, absurd nesting
            raise ScanFormatError(f"scan is not readable JSON ({type(exc).__name__})") from None
        return _from_json(data, source, content)
    try:
        return _from_csv(text, source, content)
    except csv.Error as exc:  # a field over the csv module's size limit, a NUL byte
        raise ScanFormatError(f"scan is not readable CSV: {exc}") from None


def parse_scan_payload(payload: dict[str, Any] | list[Any], source: str = "api") -> RawScan:
    """The specification's API shape: ``{"scan_results": [...]}`` plus ``trading_day``, ``generated_at``."""
    content = json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str).encode()
    if len(content) > MAX_BYTES:
        raise ScanFormatError(f"scan is {len(content):,} bytes; the limit is {MAX_BYTES:,}")
    return _from_json(payload, source, content)


def read_scan(location: str | Path, trading_day: date | None = None) -> RawScan:
    """Read a scan from a JSON/CSV file, a folder (the newest scan of ``trading_day``) or ``s3://bucket/prefix``."""
    loc = str(location)
    if loc.startswith("s3://"):
        return _read_s3(loc, trading_day)
    path = Path(loc)
    if path.is_dir():
        path = _newest_in_folder(path, trading_day)
    if not path.is_file():
        raise ScanFormatError(f"no scan file at {path}")
    if path.stat().st_size > MAX_BYTES:
        raise ScanFormatError(f"scan is {path.stat().st_size:,} bytes; the limit is {MAX_BYTES:,}")
    with path.open("rb") as f:  # bounded: the file may still be growing, or lie about its size
        return parse_scan_bytes(f.read(MAX_BYTES + 1), str(path))


class ScanUnavailable(Exception):
    """No readable scan of the day came by the deadline (the message says where, until when, and what was
    last seen there)."""


def _transient_scan_errors() -> tuple[type[BaseException], ...]:
    """What waiting can cure: no file yet, one still being written (cut JSON, an empty file), an S3 error."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (ScanFormatError, OSError, BotoCoreError, ClientError)


async def wait_for_scan(
    location: str | Path,
    trading_day: date,
    *,
    deadline: datetime,
    poll_seconds: float,
    clock: Any,
    wait_until: Any,
    log: Any = log,
) -> RawScan:
    """Read the scan of ``trading_day`` at ``location``, retrying until ``deadline`` (on ``clock``) while
    there is none yet, the file cannot be parsed yet (still being written), S3 answers with an error, or the
    newest scan there is of another day; ``wait_until`` (the runtime's) waits between attempts. Raises
    :class:`ScanUnavailable` at the deadline. Validation is the caller's: a readable but bad scan is
    rejected at once, not waited on."""
    transient = _transient_scan_errors()
    attempts = 0
    while True:
        attempts += 1
        try:
            raw = read_scan(location, trading_day)
            if raw.trading_day is None or raw.trading_day == trading_day:
                return raw
            last = f"the newest scan there ({raw.source}) is of {raw.trading_day}"
        except transient as exc:
            last = str(exc) if isinstance(exc, ScanFormatError) else type(exc).__name__
        now = clock()
        if now >= deadline:
            raise ScanUnavailable(
                f"no readable scan of {trading_day} at {location} by {deadline.astimezone(KST):%H:%M} KST "
                f"({attempts} attempts, every {poll_seconds:g} s); last: {last}"
            )
        if attempts == 1:
            log.info("waiting for the scan of %s at %s until %s: %s", trading_day, location, deadline, last)
        await wait_until(min(deadline, now + timedelta(seconds=poll_seconds)))


def _newest_in_folder(folder: Path, trading_day: date | None) -> Path:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".json", ".csv"))
    if trading_day is not None:
        tags = (trading_day.strftime("%Y%m%d"), trading_day.isoformat())
        tagged = [p for p in files if any(t in p.name for t in tags)]
        files = tagged or files
    if not files:
        raise ScanFormatError(f"no .json or .csv scan in {folder}")
    return max(files, key=lambda p: (p.stat().st_mtime, p.name))


def _read_s3(url: str, trading_day: date | None) -> RawScan:
    import boto3

    bucket, _, prefix = url[len("s3://") :].partition("/")
    s3 = boto3.client("s3")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    objs = [o for o in listing.get("Contents", []) if o["Key"].lower().endswith((".json", ".csv"))]
    if trading_day is not None:
        tag = trading_day.strftime("%Y%m%d")
        objs = [o for o in objs if tag in o["Key"] or trading_day.isoformat() in o["Key"]] or objs
    if not objs:
        raise ScanFormatError(f"no scan under {url}")
    newest = max(objs, key=lambda o: (o["LastModified"], o["Key"]))
    if newest["Size"] > MAX_BYTES:
        raise ScanFormatError(f"scan is {newest['Size']:,} bytes; the limit is {MAX_BYTES:,}")
    body = s3.get_object(Bucket=bucket, Key=newest["Key"])["Body"].read()
    return parse_scan_bytes(body, f"s3://{bucket}/{newest['Key']}")


def _from_json(data: Any, source: str, content: bytes) -> RawScan:
    meta: dict[str, Any] = {}
    if isinstance(data, dict):
        meta = data
        data = data.get("scan_results", data.get("rows"))
    if not isinstance(data, list):
        raise ScanFormatError("JSON scan must be a list of rows or an object with a 'scan_results' list")
    if len(data) > MAX_ROWS:
        raise ScanFormatError(f"scan has {len(data):,} rows; the limit is {MAX_ROWS:,}")
    if not all(isinstance(r, dict) for r in data):
        raise ScanFormatError("every scan row must be a JSON object")
    return RawScan(
        rows=[dict(r) for r in data],
        source=source,
        trading_day=_parse_day(meta.get("trading_day") or meta.get("scan_date")),
        generated_at=_parse_moment(meta.get("generated_at")),
        content=content,
    )


def _from_csv(text: str, source: str, content: bytes) -> RawScan:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise ScanFormatError("CSV scan has no header")
    rows: list[dict[str, Any]] = []
    for i, r in enumerate(reader):
        if i >= MAX_ROWS:
            raise ScanFormatError(f"scan has more than {MAX_ROWS:,} rows")
        rows.append({k.strip(): v for k, v in r.items() if k is not None})
    days = {r.get("scan_date") or r.get("trading_day") or r.get("date") for r in rows} - {None, ""}
    if len(days) > 1:
        raise ScanFormatError("CSV scan mixes several dates")
    day = _parse_day(days.pop()) if days else None
    stamps = {r.get("generated_at") for r in rows} - {None, ""}
    return RawScan(
        rows=rows,
        source=source,
        trading_day=day,
        generated_at=_parse_moment(stamps.pop()) if len(stamps) == 1 else None,
        content=content,
    )


def _parse_day(value: Any) -> date | None:
    if value in (None, ""):
        return None
    try:
        s = str(value)
        return date.fromisoformat(s) if "-" in s else datetime.strptime(s, "%Y%m%d").date()
    except ValueError:
        raise ScanFormatError(f"scan date {str(value)[:40]!r} is not a date") from None


def _parse_moment(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        moment = moment if moment.tzinfo else moment.replace(tzinfo=KST)
        moment.astimezone(UTC)  # the first or last day of the calendar with an offset falls off it
    except (ValueError, OverflowError):
        raise ScanFormatError(f"generated_at {str(value)[:40]!r} is not an ISO timestamp in range") from None
    return moment


# --- validation ------------------------------------------------------------------------------------------


def validate_scan(
    raw: RawScan,
    *,
    trading_day: date,
    now: datetime,
    max_age: timedelta = timedelta(hours=3),
) -> ScanValidation:
    """Validate a whole scan for ``trading_day``; any failure rejects the batch."""
    require_aware(now)
    issues: list[Issue] = []
    n = len(raw.rows)
    if n == 0:
        issues.append(Issue("non_empty", "the scan has no rows"))
    columns = set().union(*(r.keys() for r in raw.rows)) if raw.rows else set()
    columns = {"price" if c == "current_price" else c for c in columns}
    missing = [c for c in REQUIRED if c not in columns]
    if missing and n:
        issues.append(Issue("required_columns", f"missing column(s): {', '.join(missing)}"))
    for c in REQUIRED:
        if c in missing:
            continue
        lacking = tuple(i for i, r in enumerate(raw.rows) if _field(r, c) is None)
        if lacking:
            issues.append(Issue("required_fields", f"{c} is missing", lacking))
            missing.append(c)
    issues.extend(_freshness_issues(raw, trading_day, now, max_age))
    frame_rows, type_issues = _typed_rows(raw.rows) if not missing and n else ([], [])
    issues.extend(type_issues)
    if frame_rows:
        issues.extend(_content_issues(raw.rows, frame_rows))
    if frame_rows and not type_issues:
        issues.extend(_suite_issues(frame_rows))
    if issues:
        return ScanValidation(False, (), tuple(issues), n)
    rows = tuple(
        ScanRow(code=r["code"], name=r["name"], score=r["score"], price=r["price"], reasons=r["reasons"])
        for r in frame_rows
    )
    return ScanValidation(True, rows, (), n)


def _field(row: dict[str, Any], name: str) -> Any:
    return row.get("current_price", row.get("price")) if name == "price" else row.get(name)


def _freshness_issues(raw: RawScan, trading_day: date, now: datetime, max_age: timedelta) -> list[Issue]:
    issues: list[Issue] = []
    if raw.trading_day is None:
        issues.append(Issue("trading_day", "the scan does not say which trading day it is for"))
    elif raw.trading_day != trading_day:
        issues.append(Issue("trading_day", f"scan is for {raw.trading_day}, expected {trading_day}"))
    if raw.generated_at is not None:
        age = now - raw.generated_at
        if age > max_age:
            stamp = raw.generated_at.isoformat()
            issues.append(Issue("fresh", f"scan generated {stamp} is older than {max_age}"))
        if age < -timedelta(minutes=5):
            issues.append(Issue("fresh", f"scan generated {raw.generated_at.isoformat()} is in the future"))
        if raw.generated_at.astimezone(KST).date() != trading_day:
            issues.append(Issue("fresh", "scan was generated on another day"))
    return issues


def _typed_rows(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Issue]]:
    """Coerce types; every row that cannot be read is named with the field that failed."""
    typed: list[dict[str, Any]] = []
    bad: dict[str, list[int]] = {}
    vals: dict[str, list[str]] = {}

    def fail(field_: str, i: int, value: Any) -> None:
        bad.setdefault(field_, []).append(i)
        vals.setdefault(field_, []).append(repr(value)[:40])

    for i, r in enumerate(rows):
        price_raw = _field(r, "price")
        # A numeric code would have lost its leading zeros; a non-text name is not a name.
        for text_field in ("code", "name"):
            if not isinstance(r.get(text_field), str):
                fail(text_field, i, r.get(text_field))
        out: dict[str, Any] = {
            "code": str(r.get("code") or "").strip(),
            "name": str(r.get("name") or "").strip(),
        }
        score = _as_float(r.get("score"))
        if score is None:
            fail("score", i, r.get("score"))
        price = _as_int_price(price_raw)
        if price is None:
            fail("price", i, price_raw)
        out["score"], out["price"] = score, price
        reasons = r.get("reasons")
        if not (reasons is None or isinstance(reasons, str) or _texts(reasons)):
            fail("reasons", i, reasons)
        out["reasons"] = _reasons(reasons)
        typed.append(out)
    issues = [
        Issue(f"type_{f}", f"{f} must be {_EXPECTED_TYPE[f]}", tuple(rows_), tuple(vals[f]))
        for f, rows_ in bad.items()
    ]  # fmt: skip
    return typed, issues


_EXPECTED_TYPE = {
    "code": "text", "name": "text", "score": "a number", "price": "a whole number of won",
    "reasons": "a list of texts",
}  # fmt: skip

# Text that a spreadsheet would run as a formula (= or @ first, + or - first but not a plain number, or a
# DDE call "cmd|...!" after a sign), markup tags, control and bidirectional-override characters: names and
# reasons end up in reports, notifications and exported tables. "+5% 상승" and "- 거래량 증가" are fine.
_FORMULA = re.compile(r"^\s*(?:[=@]|[+\-](?![\d\s.%]))")
_SIGNED_DDE = re.compile(r"^\s*[+\-].*\|.*!", re.DOTALL)
_MARKUP = re.compile(r"<\s*[A-Za-z/!?]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _unsafe_text(text: str) -> bool:
    return any(rule.search(text) for rule in (_FORMULA, _SIGNED_DDE, _MARKUP, _CONTROL))


def _texts(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _content_issues(rows: list[dict[str, Any]], typed: list[dict[str, Any]]) -> list[Issue]:
    """Rows whose text is unsafe to show, or that give two different prices."""
    unsafe: dict[int, str] = {}
    conflicting: dict[int, str] = {}
    for i, (r, t) in enumerate(zip(rows, typed, strict=True)):
        texts = [r["name"]] if isinstance(r.get("name"), str) else []
        texts += list(t["reasons"])
        bad = next((x for x in texts if _unsafe_text(x)), None)
        if bad is not None:
            unsafe[i] = repr(bad)[:40]
        both = "price" in r and "current_price" in r
        if both and _as_int_price(r["price"]) != _as_int_price(r["current_price"]):
            conflicting[i] = f"{r['price']!r} / {r['current_price']!r}"[:40]
    issues = []
    if unsafe:
        detail = "name or reason looks like a formula, markup or holds control characters"
        issues.append(Issue("unsafe_text", detail, tuple(unsafe), tuple(unsafe.values())))
    if conflicting:
        detail = "price and current_price differ"
        issues.append(Issue("price_conflict", detail, tuple(conflicting), tuple(conflicting.values())))
    return issues


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool) or v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _as_int_price(v: Any) -> int | None:
    f = _as_float(v)
    if f is None or f != int(f) or abs(f) > 1e12:
        return None
    return int(f)


def _reasons(v: Any) -> tuple[str, ...]:
    if v is None or v == "":
        return ()
    if isinstance(v, list):
        return tuple(str(x) for x in v)
    s = str(v)
    if s.startswith("["):
        try:
            return tuple(str(x) for x in json.loads(s))
        except json.JSONDecodeError:
            pass
    return tuple(x.strip() for x in s.split("|") if x.strip())


@lru_cache(maxsize=1)
def _suite_definition() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SUITE_PATH.read_text(encoding="utf-8"))
    return data


def _suite_issues(rows: list[dict[str, Any]]) -> list[Issue]:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "code": [r["code"] for r in rows],
            "name": [r["name"] for r in rows],
            "score": [r["score"] for r in rows],
            "price": [r["price"] for r in rows],
            "price_on_tick": [is_valid_tick(r["price"]) if r["price"] > 0 else False for r in rows],
        }
    )
    return _validator().validate(frame)


class _GxValidator:
    """An ephemeral Great Expectations context with the repository's suite, built once per process."""

    def __init__(self) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        for name in ("great_expectations", "great_expectations.data_context.types.base"):
            logging.getLogger(name).setLevel(logging.WARNING)
        ctx = gx.get_context(mode="ephemeral")
        ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        definition = _suite_definition()
        suite = gx.ExpectationSuite(name=definition["name"])
        for e in definition["expectations"]:
            config = ExpectationConfiguration(type=e["type"], kwargs=e["kwargs"])
            suite.add_expectation(config.to_domain_obj())
        self._suite = ctx.suites.add(suite)
        asset = ctx.data_sources.add_pandas("scan").add_dataframe_asset("rows")
        self._batch_definition = asset.add_batch_definition_whole_dataframe("whole")

    def validate(self, frame: Any) -> list[Issue]:
        batch = self._batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(self._suite, result_format="COMPLETE")
        issues: list[Issue] = []
        for r in result.results:
            if r.success:
                continue
            cfg = r.expectation_config
            kwargs = dict(cfg.kwargs) if cfg is not None else {}
            column = kwargs.pop("column", "?")
            kwargs.pop("batch_id", None)
            rule = cfg.type if cfg is not None else "unknown"
            res = r.result or {}
            rows = tuple(int(i) for i in res.get("unexpected_index_list") or [])
            values = tuple(str(v) for v in res.get("unexpected_list") or [])
            issues.append(Issue(rule, f"{column} {json.dumps(kwargs, ensure_ascii=False)}", rows, values))
        return issues


@lru_cache(maxsize=1)
def _validator() -> _GxValidator:
    return _GxValidator()


def warm_up_in_background() -> None:
    """Build the validator in a daemon thread: importing Great Expectations takes about 11 s of CPU, which a
    worker should pay when it starts, not inside the 15:40 window."""
    import threading

    threading.Thread(target=_validator, name="scan-validator-warm-up", daemon=True).start()
