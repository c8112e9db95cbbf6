"""A user's notification preferences: the channels a user hears on and the mobile number KakaoTalk and SMS
(SNS) deliver to. The dispatcher reads them for every user notice (``autotrade.runtime.build_notifier``)."""

from __future__ import annotations

import re
from typing import Literal

from fastapi import APIRouter, HTTPException, Request, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from autotrade.api.app import ApiDeps, CurrentUser
from autotrade.store.models import User

router = APIRouter(tags=["notifications"])

UserChannel = Literal["console", "kakao", "sns"]  # Slack is the operator's channel
NEEDS_PHONE = frozenset({"kakao", "sns"})
# A Korean mobile number: 010, then 8 digits; written 010-1234-5678, 01012345678 or +82 10-1234-5678.
_MOBILE = re.compile(r"^010(\d{8})$")
MOBILE_PATTERN = r"^(\+82[ -]?10|010)[ -]?\d{4}[ -]?\d{4}$"  # the same, as the schema says it


def normalize_mobile(value: str) -> str:
    """``010XXXXXXXX`` from any usual spelling; ValueError when it is not a Korean mobile number."""
    digits = re.sub(r"[\s\-().]", "", value)
    if digits.startswith("+82"):
        digits = "0" + digits[3:]
    if not _MOBILE.fullmatch(digits):
        raise ValueError("a Korean mobile number: 010-XXXX-XXXX")
    return digits


def display_mobile(digits: str | None) -> str | None:
    return None if digits is None else f"{digits[:3]}-{digits[3:7]}-{digits[7:]}"


class NotificationPreferences(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"channels": ["kakao", "sns"], "phone": "010-1234-5678"}]}
    )

    channels: list[UserChannel] = Field(..., min_length=1, max_length=3, description="where notices go")
    phone: str | None = Field(
        None, pattern=MOBILE_PATTERN, description="mobile 010-XXXX-XXXX (omitted: the one given before)"
    )

    @field_validator("channels")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @field_validator("phone")
    @classmethod
    def _mobile(cls, v: str | None) -> str | None:
        return None if v is None or not v.strip() else normalize_mobile(v)


class NotificationPreferencesView(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"channels": ["kakao"], "phone": "010-1234-5678"}]}
    )

    channels: list[str]
    phone: str | None = Field(None, description="010-XXXX-XXXX")


@router.get("/api/me/notifications", response_model=NotificationPreferencesView)
def get_preferences(principal: CurrentUser, request: Request) -> NotificationPreferencesView:
    """Your notification channels and mobile number."""
    deps: ApiDeps = request.app.state.deps
    with deps.db.unit_of_work() as s:
        user = s.get(User, principal.user_id)
        if user is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such user")
        channels = [c for c in (user.notify_channels or "console").split(",") if c]
        return NotificationPreferencesView(channels=channels, phone=display_mobile(user.phone))


@router.put("/api/me/notifications", response_model=NotificationPreferencesView)
def put_preferences(
    body: NotificationPreferences, principal: CurrentUser, request: Request
) -> NotificationPreferencesView:
    """Choose your channels (console, kakao, sns) and give the mobile number KakaoTalk and SMS use."""
    deps: ApiDeps = request.app.state.deps
    with deps.db.unit_of_work() as s:
        user = s.get(User, principal.user_id)
        if user is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such user")
        phone = body.phone or user.phone
        needing = sorted(set(body.channels) & NEEDS_PHONE)
        if needing and phone is None:
            detail = f"{', '.join(needing)} needs a mobile number (phone)"
            raise HTTPException(status.HTTP_409_CONFLICT, detail)
        user.notify_channels = ",".join(body.channels)
        user.phone = phone
    return NotificationPreferencesView(channels=list(body.channels), phone=display_mobile(phone))
