"""Typed broker errors: Kiwoom's ``return_code``/``return_msg`` envelope and HTTP failures.

Every error answers the two questions the caller has to act on:

* ``retry_safe``: the broker did not process the request, so sending it again cannot duplicate anything
  (rate limit, rejected token, connection never made; for queries also 5xx and timeouts);
* ``outcome_unknown``: an *order* may or may not have been placed (timeout, 5xx, unreadable success
  response). The order service must reconcile against the broker's order inquiries before resending.

An error with neither flag is a definitive refusal: nothing was placed, and sending the same request again
would be refused again.

Messages are built only from the api-id, the codes and the broker's text (scrubbed of the caller's secrets
by the client), never from request headers or bodies, so they cannot leak app keys, secrets or tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Kiwoom's observed wire shape puts a small category in return_code and the detailed code in brackets:
# "인증에 실패했습니다[8005:Token이 유효하지 않습니다]". The websocket LOGIN answer uses "CODE=8005" and the
# mock's unsupported-TR answer "RC9000:…"; all three are recognised.
_BRACKET = re.compile(r"\[(\d{3,5})\s*:\s*([^\]]*)\]")
_CODE_EQ = re.compile(r"CODE\s*=\s*(\d{3,5})")
_RC = re.compile(r"RC(\d{4})")

# Category codes seen in return_code (third-party observation, KIWOOM.md section 2).
CATEGORY_INPUT = 2
CATEGORY_AUTH = 3
CATEGORY_RATE_LIMIT = 5
CATEGORY_NOT_SUPPORTED = 20

TOKEN_EXPIRED_CODES = frozenset({8005, 8031, 8103})
CREDENTIAL_CODES = frozenset({8001, 8002, 8011, 8012, 8020, 8030})
RATE_LIMIT_CODES = frozenset({1700, 1701, 1702})
SYMBOL_CODES = frozenset({1901, 1902})
NOT_SUPPORTED_CODES = frozenset({8104, 9000})
SERVER_ERROR_CODE = 1999

_MAX_BROKER_TEXT = 200


class BrokerError(Exception):
    """Base of every failure talking to Kiwoom."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        retry_safe: bool = False,
        outcome_unknown: bool = False,
        api_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_safe = retry_safe
        self.outcome_unknown = outcome_unknown
        self.api_id = api_id
        self.http_status = http_status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r}, code={self.code}, retry_safe={self.retry_safe})"


class AuthError(BrokerError):
    """Authentication failed for a reason a new token will not fix (device, IP, revoked key)."""


class TokenExpiredError(AuthError):
    """The broker rejected the token (expired, revoked, wrong mode); issue a new one and resend once."""


class CredentialsError(AuthError):
    """The app key or secret is wrong, missing or for the other mode (real/mock). Needs the user."""


class RateLimitError(BrokerError):
    """Too many requests for this key: the request was not processed, safe to resend after a pause."""


class OrderRejectedError(BrokerError):
    """The broker refused the order (a business rule): nothing was placed; resending is refused again."""


class InputError(BrokerError):
    """The request was malformed or a field invalid (15xx/16xx): nothing was processed."""


class SymbolError(BrokerError):
    """The market or stock code is unknown to the broker (1901/1902)."""


class ServerError(BrokerError):
    """The broker failed internally (HTTP 5xx, 1999). For an order the outcome is unknown."""


class BrokerTimeoutError(BrokerError):
    """No answer in time. For an order the outcome is unknown."""


class BrokerConnectionError(BrokerError):
    """No connection could be made, so the request was never sent: safe to resend."""


class ResponseFormatError(BrokerError):
    """The broker answered success in a shape we cannot read. For an order the outcome is unknown."""


class NotSupportedError(BrokerError):
    """The TR is not available here (the mock host rejects some TRs: return_code 20, RC9000, 8104)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """``return_code``/``return_msg`` with the detailed code found wherever Kiwoom put it."""

    return_code: int
    return_msg: str

    @property
    def detail_code(self) -> int | None:
        for pattern in (_BRACKET, _CODE_EQ, _RC):
            found = pattern.search(self.return_msg)
            if found:
                return int(found.group(1))
        # Codes of three or more digits are detailed codes sent directly (the shape OFF client.py checks).
        return self.return_code if self.return_code >= 100 else None

    @property
    def code(self) -> int:
        return self.detail_code or self.return_code


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """The broker's text, shortened, with any of the caller's secrets blanked out."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text[:_MAX_BROKER_TEXT]


def _safety(retry_safe: bool, *, unknown_for_orders: bool, is_order: bool) -> str:
    if retry_safe:
        return "not processed, safe to retry"
    if unknown_for_orders and is_order:
        return "order outcome UNKNOWN, reconcile before resending"
    if unknown_for_orders:
        return "safe to retry"
    return "not safe to retry unchanged"


def error_from_envelope(
    env: Envelope,
    *,
    api_id: str,
    is_order: bool,
    http_status: int | None = None,
    secrets: tuple[str, ...] = (),
) -> BrokerError:
    """The typed error for a non-zero ``return_code``."""
    code = env.detail_code
    cls, retry_safe, unknown = _classify(env.return_code, code, is_order)
    if cls is ServerError:
        retry_safe = not is_order
    text = scrub(env.return_msg, secrets)
    shown = code if code is not None else env.return_code
    safety = _safety(retry_safe, unknown_for_orders=unknown, is_order=is_order)
    message = f"Kiwoom {api_id} failed with code {shown}: {text} ({safety})"
    return cls(
        message,
        code=shown,
        retry_safe=retry_safe,
        outcome_unknown=unknown and is_order,
        api_id=api_id,
        http_status=http_status,
    )


def _classify(category: int, code: int | None, is_order: bool) -> tuple[type[BrokerError], bool, bool]:
    """(class, retry_safe, outcome unknown for orders) for a detailed code, else for the category."""
    if code is not None:
        found = _classify_detail(code, is_order)
        if found is not None:
            return found
    if category == CATEGORY_RATE_LIMIT:
        return RateLimitError, True, False
    if category == CATEGORY_AUTH:
        return AuthError, False, False
    if category == CATEGORY_INPUT:
        return InputError, False, False
    if category == CATEGORY_NOT_SUPPORTED:
        return NotSupportedError, False, False
    # Anything else on an order is a business refusal (insufficient cash, price out of band, market
    # closed): the broker answered, so it decided, and nothing was placed.
    return (OrderRejectedError if is_order else BrokerError), False, False


def _classify_detail(code: int, is_order: bool) -> tuple[type[BrokerError], bool, bool] | None:
    if code in TOKEN_EXPIRED_CODES:
        return TokenExpiredError, True, False
    if code in CREDENTIAL_CODES:
        return CredentialsError, False, False
    if 8000 <= code < 8100:
        return AuthError, False, False
    if code in RATE_LIMIT_CODES:
        return RateLimitError, True, False
    if code in SYMBOL_CODES:
        return SymbolError, False, False
    if code in NOT_SUPPORTED_CODES:
        return NotSupportedError, False, False
    if code == SERVER_ERROR_CODE:
        return ServerError, False, True
    if 1500 <= code < 1700:
        return InputError, False, False
    return None


def error_from_http_status(status: int, *, api_id: str, is_order: bool, detail: str = "") -> BrokerError:
    """The typed error for an HTTP failure whose body carried no usable envelope."""
    suffix = f": {detail}" if detail else ""
    if status == 429:
        return RateLimitError(
            f"Kiwoom {api_id} was rate limited (HTTP 429){suffix} (not processed, safe to retry)",
            retry_safe=True,
            api_id=api_id,
            http_status=status,
        )
    if status == 401:
        return TokenExpiredError(
            f"Kiwoom {api_id} rejected the token (HTTP 401){suffix} (not processed, safe to retry)",
            retry_safe=True,
            api_id=api_id,
            http_status=status,
        )
    if status >= 500:
        safety = _safety(not is_order, unknown_for_orders=True, is_order=is_order)
        return ServerError(
            f"Kiwoom {api_id} failed with HTTP {status}{suffix} ({safety})",
            retry_safe=not is_order,
            outcome_unknown=is_order,
            api_id=api_id,
            http_status=status,
        )
    return InputError(
        f"Kiwoom {api_id} refused the request with HTTP {status}{suffix} (not safe to retry unchanged)",
        api_id=api_id,
        http_status=status,
    )


def timeout_error(api_id: str, *, is_order: bool, what: str) -> BrokerTimeoutError:
    safety = _safety(not is_order, unknown_for_orders=True, is_order=is_order)
    return BrokerTimeoutError(
        f"Kiwoom {api_id} timed out ({what}) ({safety})",
        retry_safe=not is_order,
        outcome_unknown=is_order,
        api_id=api_id,
    )


def transport_error(api_id: str, *, is_order: bool, what: str) -> ServerError:
    """The connection broke after the request may have been sent."""
    safety = _safety(not is_order, unknown_for_orders=True, is_order=is_order)
    return ServerError(
        f"Kiwoom {api_id} connection failed ({what}) ({safety})",
        retry_safe=not is_order,
        outcome_unknown=is_order,
        api_id=api_id,
    )
