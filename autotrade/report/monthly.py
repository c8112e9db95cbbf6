"""The latest monthly review (live trading vs the month's backtest) in the operator's daily report.

The monthly review flow (flows/monthly_review.py, autotrade/backtest/review.py) writes each review as
``review-YYYY-MM.md`` and ``review-YYYY-MM.json`` under :func:`reviews_dir` of the home; the database keeps
no copy. The daily report reads the JSON of the latest month that began on or before the report's day and
shows it trade by trade: the buy and each exit tier, live and backtest, the effect on cash, and every
difference with its reason. Reading only the JSON keeps the backtester (numpy, pandas) out of the report.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any

_NAME = re.compile(r"^review-(\d{4})-(\d{2})\.json$")


def reviews_dir(data_dir: Path) -> Path:
    """Where the monthly review flow writes its files and the daily report reads them."""
    return data_dir / "reports" / "monthly"


def latest_review(directory: Path, day: date) -> tuple[Path, dict[str, Any] | None] | None:
    """The newest review file of a month starting on or before ``day`` and its content (``None`` when it
    cannot be read); ``None`` when there is no review."""
    if not directory.is_dir():
        return None
    months = []
    for path in directory.iterdir():
        m = _NAME.match(path.name)
        if m and path.is_file() and date(int(m[1]), int(m[2]), 1) <= day:
            months.append((m[1] + m[2], path))
    if not months:
        return None
    _, path = max(months)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return path, None
    return path, data if isinstance(data, dict) else None


def _cell(value: Any) -> str:
    return str(value).replace("|", "/").replace("\n", " ")


def _fill(fill: dict[str, Any] | None) -> str:
    if not fill:
        return "-"
    return f"{fill['day'][5:]} {fill['quantity']:,} @ {fill['price']:,}"


def review_markdown(directory: Path, day: date) -> str:
    """The operator report's section: the latest review trade by trade, or that there is none yet."""
    found = latest_review(directory, day)
    if found is None:
        return "## Monthly review\n\nNo monthly review yet (the monthly-review deployment runs on the 1st)."
    path, review = found
    if review is None:
        return f"## Monthly review\n\nThe latest review, `{path.name}`, could not be read."
    out = [
        f"## Monthly review {review.get('month', '')}",
        "",
        f"Live trading against the month's backtest on the scans received ({review.get('scan_days', 0)} "
        f"trading days) over the bars of `{review.get('bars_source', '')}`, with the live settings. "
        f"Files: `{path.with_suffix('.md').name}`, `{path.name}`.",
    ]
    if review.get("skipped"):
        return "\n".join([*out, "", f"Nothing to review: {review['skipped']}."])
    accounts = review.get("accounts") or []
    if not accounts:
        out += ["", "No account traded in the month."]
    for a in accounts:
        trades = a.get("trades") or []
        differences = sum(len(t.get("findings") or []) for t in trades)
        same = sum(1 for t in trades if not t.get("findings"))
        live, backtest = a.get("live_realized", 0), a.get("backtest_realized", 0)
        out += [
            "",
            f"### {a.get('user_id')} / {a.get('account_no')}",
            "",
            f"{len(trades)} trades compared, {same} the same, {differences} differences. Realised P&L after "
            f"costs: live {live:+,} KRW, backtest {backtest:+,} KRW ({live - backtest:+,}).",
        ]
        if not trades:
            continue
        out += [
            "",
            "| stock | bought | trade | live | backtest | effect (KRW) | what differs | reason |",
            "|---|---|---|---|---|---:|---|---|",
        ]
        for t in trades:
            findings = t.get("findings") or []
            what = "; ".join(f"{f['aspect']}: {f['detail']}" for f in findings) or "same"
            why = ", ".join(dict.fromkeys(f["reason"] for f in findings)) or "-"
            out.append(
                f"| {_cell(t['code'])} {_cell(t['name'])} | {t['entry_day'][5:]} | {_cell(t['trade'])} | "
                f"{_fill(t.get('live'))} | {_fill(t.get('backtest'))} | {t.get('effect', 0):+,} | "
                f"{_cell(what)} | {_cell(why)} |"
            )
    return "\n".join(out)
