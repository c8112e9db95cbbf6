"""Request and response bodies; field names as the specification writes them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

ACCOUNT_NO = r"^[0-9]{8,11}(-[0-9]{2})?$"
CREDENTIALS_EXAMPLE = {"email": "hong@example.com", "password": "correct horse battery"}


NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL: for text that goes into a query as it is


def _not_unicode(value: Any) -> bool:
    """An unpaired surrogate (JSON's \\ud800 escape): not Unicode text, it cannot be encoded as UTF-8 for a
    database, a password hash or a Prefect parameter."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, list):
        return any(_not_unicode(v) for v in value)
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class RequestBody(BaseModel):
    """Every request body: its text must be Unicode (checked after each field's own rules)."""

    @field_validator("*", mode="after")
    @classmethod
    def _unicode_text(cls, value: Any) -> Any:
        if _not_unicode(value):
            raise ValueError("text must be valid Unicode (no unpaired surrogates)")
        return value


class SignupRequest(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "hong@example.com", "password": "correct horse battery"}]}
    )
    # Printable ASCII without spaces around one @: the same in Python's and JSON Schema's regex dialects.
    email: str = Field(min_length=3, max_length=255, pattern=r"^[!-?A-~]+@[!-?A-~]+$")
    password: SecretStr = Field(min_length=10, max_length=256)


class SignupResponse(BaseModel):
    """The same answer whether or not the email was free: the API does not reveal who is registered."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"success": True, "message": "가입 요청을 받았습니다: 로그인하세요"}]}
    )
    success: bool = True
    message: str


class PasswordChangeRequest(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"current_password": "correct horse battery",
                                         "new_password": "a longer passphrase now"}]}
    )  # fmt: skip
    current_password: SecretStr = Field(min_length=1, max_length=256)
    new_password: SecretStr = Field(min_length=10, max_length=256)


class DailyLimitRequest(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"daily_limit": 5_000_000}]})
    daily_limit: int = Field(gt=0, le=10_000_000_000)


class LoginRequest(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "hong@example.com", "password": "correct horse battery"}]}
    )
    email: str = Field(min_length=3, max_length=255, pattern=NO_NUL)
    password: SecretStr = Field(min_length=1, max_length=256)


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type name, not a secret
    expires_in: int


class RegisterApiRequest(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"app_key": "KIWOOM_APP_KEY", "app_secret": "KIWOOM_APP_SECRET", "account_no": "12345678901",
                 "daily_limit": 5000000}
            ]
        }
    )  # fmt: skip
    app_key: SecretStr = Field(min_length=8, max_length=256)
    app_secret: SecretStr = Field(min_length=8, max_length=512)
    account_no: str = Field(pattern=ACCOUNT_NO)
    daily_limit: int = Field(10_000_000, gt=0, le=10_000_000_000)


class AccountInfo(BaseModel):
    account_no: str
    account_name: str | None
    balance: int


class RegisterApiResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"success": True, "message": "API 키 등록 완료",
                 "account_info": {"account_no": "12345678901", "account_name": "홍길동", "balance": 10000000}}
            ]
        }
    )  # fmt: skip
    success: bool
    message: str
    account_info: AccountInfo


class ApiStatusResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"api_status": "ACTIVE", "account_no": "12345678901", "account_name": "홍길동",
                 "daily_limit": 5000000, "is_auto_trading_enabled": True,
                 "last_used_at": "2025-10-24T15:36:00Z"}
            ]
        }
    )  # fmt: skip
    api_status: str
    account_no: str
    account_name: str | None
    daily_limit: int
    is_auto_trading_enabled: bool
    last_used_at: datetime | None
    action: str | None = Field(None, description="what to do when the key is not ACTIVE")


class AccountSummary(BaseModel):
    account_no: str
    account_name: str | None
    api_status: str
    is_auto_trading_enabled: bool
    daily_limit: int


class AutoTradingToggle(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"account_no": "12345678901", "enabled": True}]}
    )
    account_no: str = Field(pattern=ACCOUNT_NO)
    enabled: bool


class RotateKeyRequest(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"account_no": "12345678901", "app_key": "NEW_KIWOOM_APP_KEY",
                          "app_secret": "NEW_KIWOOM_APP_SECRET"}]
        }
    )  # fmt: skip
    account_no: str = Field(pattern=ACCOUNT_NO)
    app_key: SecretStr = Field(min_length=8, max_length=256)
    app_secret: SecretStr = Field(min_length=8, max_length=512)


class ScanResultIn(RequestBody):
    code: str = Field(pattern=r"^[0-9A-Z]{6}$")
    name: str = Field(min_length=1, max_length=100)
    score: float = Field(ge=0, le=10)
    current_price: int = Field(gt=0, le=100_000_000)
    reasons: list[str] = Field(default_factory=list, max_length=20)


class ExecuteConfig(RequestBody):
    max_investment: int = Field(10_000_000, gt=0)
    max_stocks: int = Field(10, gt=0, le=100)
    max_per_stock: int = Field(1_000_000, gt=0)


class ExecuteRequest(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"scan_results": [{"code": "005930", "name": "삼성전자", "score": 8.5, "current_price": 70000,
                                   "reasons": ["상승시작", "거래량증가"]}],
                 "config": {"max_investment": 10000000, "max_stocks": 10, "max_per_stock": 1000000}}
            ]
        }
    )  # fmt: skip
    scan_results: list[ScanResultIn] = Field(min_length=1, max_length=5000)
    config: ExecuteConfig = Field(default_factory=ExecuteConfig)
    trading_day: date | None = Field(None, description="KRX trading day (default: today in Seoul)")
    dry_run: bool = False


class PlannedOrderOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"code": "005930", "name": "삼성전자", "quantity": 14, "price": 70000, "amount": 980000}
            ]
        }
    )  # fmt: skip
    code: str
    name: str = Field(description="the stock's name in the posted scan")
    quantity: int
    price: int = Field(description="limit price, KRW")
    amount: int = Field(description="quantity x price, KRW")


class AccountPlanOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"user_id": "user001", "account_no": "8100000001", "total": 980000,
                 "orders": [{"code": "005930", "name": "삼성전자", "quantity": 14, "price": 70000,
                             "amount": 980000}]}
            ]
        }
    )  # fmt: skip
    user_id: str
    account_no: str
    total: int = Field(description="the account's planned investment, KRW")
    orders: list[PlannedOrderOut]


class ExecuteResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"success": True, "executed_orders": 5, "total_investment": 5000000, "strategies_created": 5,
                 "message": "자동매매 실행 완료"},
                {"success": True, "executed_orders": 1, "total_investment": 980000, "strategies_created": 0,
                 "message": "자동매매 실행 완료 (모의 실행)",
                 "plans": [{"user_id": "user001", "account_no": "8100000001", "total": 980000,
                            "orders": [{"code": "005930", "name": "삼성전자", "quantity": 14, "price": 70000,
                                        "amount": 980000}]}]},
            ]
        }
    )  # fmt: skip
    success: bool
    executed_orders: int
    total_investment: int
    strategies_created: int
    message: str
    run_id: str | None = None
    plans: list[AccountPlanOut] | None = Field(
        None,
        description="a dry run that ended: the orders it would send, per user and account (accounts with "
        "none are not listed); null for a real run or a run still going",
    )


class TierOrderOut(BaseModel):
    type: str
    price: int
    status: str


class StrategyOut(BaseModel):
    code: str
    name: str
    entry_price: int
    current_price: int | None
    profit_rate: float | None
    status: str
    orders: list[TierOrderOut]


class StrategiesResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"active_strategies": [
                    {"code": "005930", "name": "삼성전자", "entry_price": 70000, "current_price": 72800,
                     "profit_rate": 4.0, "status": "PRESERVE_TRIGGERED",
                     "orders": [{"type": "STOP_LOSS", "price": 66500, "status": "ACTIVE"},
                                {"type": "PRESERVE", "price": 72800, "status": "EXECUTED"},
                                {"type": "TAKE_PROFIT", "price": 75600, "status": "ACTIVE"}]}]}
            ]
        }
    )  # fmt: skip
    active_strategies: list[StrategyOut]


class ErrorResponse(BaseModel):
    """Every refusal: a message safe to show (never whether another user exists)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"detail": "not authenticated"}]})
    detail: str


class MessageResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"success": True, "message": "자동매매를 켰습니다"}]}
    )
    success: bool = True
    message: str


class KeyDeletedResponse(MessageResponse):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "message": "API 키 삭제 완료: 보유 종목 1개는 더 이상 자동 관리되지 않습니다",
                    "unmanaged_positions": ["005930 x10"],
                }
            ]
        }
    )
    unmanaged_positions: list[str] = Field(
        default_factory=list,
        description="open positions bought with this key, whose exits no longer run ('code xshares')",
    )


class KeyEnabledResponse(MessageResponse):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "success": True,
                    "message": "API 키 재활성화 완료",
                    "user_id": "3f2a9c",
                    "account_no": "12345678901",
                    "api_status": "ACTIVE",
                }
            ]
        }
    )
    user_id: str
    account_no: str
    api_status: str


class HealthResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"status": "ok", "database": "ok", "details": {"mode": "embedded"}}]}
    )
    status: str
    database: str
    details: dict[str, Any] = Field(default_factory=dict)
