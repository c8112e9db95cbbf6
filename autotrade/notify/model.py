"""The one notification shape every channel renders: typed, immutable, independent of any channel."""

from __future__ import annotations

from enum import StrEnum
from uuid import uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


class NotificationKind(StrEnum):
    BUY_ORDERS_PLACED = "BUY_ORDERS_PLACED"
    FILLS_CONFIRMED = "FILLS_CONFIRMED"
    EXITS_ARMED = "EXITS_ARMED"
    TIER_TRIGGERED = "TIER_TRIGGERED"
    ERROR = "ERROR"
    SECURITY_ALERT = "SECURITY_ALERT"
    REPORT_READY = "REPORT_READY"


class Severity(StrEnum):
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class Audience(BaseModel):
    """Who a notification is for: one user, or the operator (``user_id`` is None).

    A model rather than a bare string so that a user who happens to be called "operator" can never
    receive the operator's alerts.
    """

    model_config = ConfigDict(frozen=True)

    user_id: str | None = None

    @classmethod
    def user(cls, user_id: str) -> Audience:
        if not user_id:
            raise ValueError("user_id must not be empty")
        return cls(user_id=user_id)

    @classmethod
    def operator(cls) -> Audience:
        return cls(user_id=None)

    @property
    def is_operator(self) -> bool:
        return self.user_id is None

    def __str__(self) -> str:
        return "operator" if self.user_id is None else f"user:{self.user_id}"


OPERATOR = Audience.operator()


class Fact(BaseModel):
    """One labelled value shown as a key/value pair (Slack section fields, console lines)."""

    model_config = ConfigDict(frozen=True)

    label: str
    value: str


class Table(BaseModel):
    """Rows of already formatted cells under a header; every row has as many cells as the header."""

    model_config = ConfigDict(frozen=True)

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...] = ()

    @model_validator(mode="after")
    def _rectangular(self) -> Table:
        width = len(self.headers)
        for row in self.rows:
            if len(row) != width:
                raise ValueError(f"table row has {len(row)} cells, header has {width}")
        return self


class Notification(BaseModel):
    """What happened, for whom, already worded (Korean) and formatted; channels only lay it out.

    ``template_params`` carries the values a pre-approved KakaoTalk template substitutes (``#{key}``):
    alimtalk cannot send free text, so the builder names the variables next to the prose.
    ``id`` doubles as the idempotency key a provider may honour when the dispatcher retries.
    """

    model_config = ConfigDict(frozen=True)

    id: str = Field(default_factory=lambda: uuid4().hex)
    kind: NotificationKind
    audience: Audience
    title: str = Field(min_length=1)
    lines: tuple[str, ...] = ()
    facts: tuple[Fact, ...] = ()
    table: Table | None = None
    severity: Severity = Severity.INFO
    occurred_at: AwareDatetime
    link: str | None = None
    template_params: dict[str, str] = Field(default_factory=dict)
