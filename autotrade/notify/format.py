"""Korean formatting of money, quantities and KST times, plain-text rendering, and secret scrubbing.

Pure functions: every channel and every builder goes through these, so "1,234,500원" and
"2026-11-25 09:15 KST" look the same on Slack, SNS, KakaoTalk and the console.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from datetime import datetime

from autotrade.domain.krx import KST
from autotrade.notify.model import Notification, Table


def won(amount: int) -> str:
    """Integer KRW with thousands separators: ``won(1234500) == "1,234,500원"``."""
    return f"{amount:,}원"


def signed_won(amount: int) -> str:
    """P&L with an explicit sign, so a gain and a loss never read alike: ``"+12,000원"``, ``"-3,500원"``."""
    return f"{amount:+,}원"


def shares(qty: int) -> str:
    return f"{qty:,}주"


def kst(moment: datetime) -> str:
    """An aware moment as KST wall time to the minute. Naive datetimes are refused: guessing a zone for
    a trading message is how a 09:15 notice ends up saying 00:15."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return moment.astimezone(KST).strftime("%Y-%m-%d %H:%M KST")


def stock_label(code: str, name: str) -> str:
    return f"{name}({code})"


# Token shapes that must never reach a message even when a caller passes raw exception text:
# Slack tokens and webhook paths, bearer tokens, AWS access key ids, key=value secrets, long opaque runs.
_SECRET_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"xox[abposr]-[A-Za-z0-9-]+"),
    re.compile(r"https://hooks\.slack\.com/\S+"),
    re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"\bA(?:KIA|SIA)[A-Z0-9]{16}\b"),
    re.compile(
        r"(?i)\b(\w*(?:secret|token|password|passwd|app_?key|api_?key|authorization))"
        r"(\"?\s*[:=]\s*\"?)[^\s\"',;&]+"
    ),
    re.compile(r"\b[A-Za-z0-9+/_=-]{32,}\b"),
)


def scrub_secrets(text: str, known: Iterable[str] = ()) -> str:
    """Mask known secret values and anything shaped like a credential."""
    for secret in known:
        if secret:
            text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        if pattern.groups >= 2:
            text = pattern.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
        else:
            text = pattern.sub("***", text)
    return text


def display_width(text: str) -> int:
    """Columns the text takes in a monospace font: Hangul and other wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * (width - display_width(text))
    return gap + text if right else text + gap


def render_table(table: Table) -> str:
    """Monospace table; numeric-looking columns (won, 주, %) right-aligned so digits line up."""
    columns = list(zip(table.headers, *table.rows, strict=True))
    widths = [max(display_width(cell) for cell in column) for column in columns]
    right = [
        bool(table.rows) and all(row[i][:1].isdigit() or row[i][:1] in "+-" for row in table.rows)
        for i in range(len(table.headers))
    ]
    lines = []
    for row in (table.headers, *table.rows):
        cells = (_pad(cell, widths[i], right[i]) for i, cell in enumerate(row))
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_text(notification: Notification) -> str:
    """Plain text for the console, SNS and the Slack fallback: title, lines, facts, table, link, time."""
    parts = [f"[{notification.title}]"]
    parts.extend(notification.lines)
    parts.extend(f"{fact.label}: {fact.value}" for fact in notification.facts)
    if notification.table is not None and notification.table.rows:
        parts.append(render_table(notification.table))
    if notification.link:
        parts.append(notification.link)
    parts.append(kst(notification.occurred_at))
    return "\n".join(parts)
