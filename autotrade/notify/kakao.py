"""KakaoTalk alimtalk through NHN Cloud's KakaoTalk Bizmessage API (v2.3, "send replaced messages").

Alimtalk only delivers text from templates pre-approved by Kakao, so each notification kind maps to a
template code (setting ``kakao_templates``) whose ``#{key}`` variables are filled from the
notification's ``template_params`` (keys listed in each builder in ``messages.py``).

Request (NHN Cloud docs, Notification > KakaoTalk Bizmessage > AlimTalk > API v2.3 guide)::

    POST {base_url}/alimtalk/v2.3/appkeys/{appkey}/messages
    Content-Type: application/json;charset=UTF-8
    X-Secret-Key: {secret key from the console}
    X-NC-API-IDEMPOTENCY-KEY: {notification id}      # optional; same key within 10 min is refused
    {"senderKey": "...40 chars...", "templateCode": "AT_TIER",
     "recipientList": [{"recipientNo": "01012345678", "templateParameter": {"stock": "...", ...}}]}

Response: ``{"header": {"resultCode": 0, "resultMessage": "SUCCESS", "isSuccessful": true},
"message": {"requestId": "...", "sendResults": [{"recipientSeq": 1, "recipientNo": "...",
"resultCode": 0, "resultMessage": "SUCCESS"}]}}``; a refused request has ``isSuccessful: false`` and a
non-zero ``resultCode``, a refused recipient a non-zero ``resultCode`` in its ``sendResults`` entry.
The base URL is ``https://api-alimtalk.cloud.toast.com`` (older docs) or
``https://kakaotalk-bizmessage.api.nhncloudservice.com``; both serve the same paths.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import SecretStr

from autotrade.notify.base import Channel, NotificationError, redact_logger, reveal, safe_error
from autotrade.notify.format import scrub_secrets
from autotrade.notify.model import Notification, NotificationKind

NHN_ALIMTALK_URL = "https://api-alimtalk.cloud.toast.com"
API_VERSION = "v2.3"

_NON_DIGITS = re.compile(r"[^0-9]")


def recipient_no(phone: str) -> str:
    """NHN wants a domestic number of digits only: ``+82 10-1234-5678`` becomes ``01012345678``."""
    digits = _NON_DIGITS.sub("", phone)
    if digits.startswith("82") and phone.strip().startswith("+"):
        digits = "0" + digits[2:]
    return digits


class KakaoAlimtalkNotifier:
    channel = Channel.KAKAO.value

    def __init__(
        self,
        *,
        app_key: SecretStr,
        secret_key: SecretStr,
        sender_key: SecretStr,
        templates: Mapping[NotificationKind, str],
        base_url: str = NHN_ALIMTALK_URL,
        timeout_seconds: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        self._app_key = app_key
        self._secret_key = secret_key
        self._sender_key = sender_key
        self._templates = dict(templates)
        self._secrets = reveal((app_key, secret_key, sender_key))
        # httpx logs each request URL at INFO and the app key is a path segment.
        redact_logger("httpx", self._secrets)
        self._client = client or httpx.Client(base_url=base_url, timeout=timeout_seconds)

    def close(self) -> None:
        self._client.close()

    def request_body(self, notification: Notification, phone: str) -> dict[str, Any]:
        template = self._templates.get(notification.kind)
        if template is None:
            raise NotificationError(self.channel, f"no template for {notification.kind}", retryable=False)
        return {
            "senderKey": self._sender_key.get_secret_value(),
            "templateCode": template,
            "recipientList": [
                {"recipientNo": recipient_no(phone), "templateParameter": dict(notification.template_params)}
            ],
        }

    def send(self, notification: Notification, to: str | None = None) -> None:
        if not to:
            raise NotificationError(self.channel, "no recipient phone number", retryable=False)
        body = self.request_body(notification, to)
        path = f"/alimtalk/{API_VERSION}/appkeys/{self._app_key.get_secret_value()}/messages"
        try:
            response = self._client.post(
                path,
                json=body,
                headers={
                    "X-Secret-Key": self._secret_key.get_secret_value(),
                    "Content-Type": "application/json;charset=UTF-8",
                    # The dispatcher retries after timeouts; the provider drops a repeat within 10 minutes
                    # instead of texting the user twice.
                    "X-NC-API-IDEMPOTENCY-KEY": notification.id,
                },
            )
        except httpx.HTTPError as exc:
            raise safe_error(self.channel, exc, self._secrets) from None
        self._check(response)

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status == 429 or status >= 500:
            raise NotificationError(self.channel, f"HTTP {status}", retryable=True)
        try:
            payload = response.json()
            header = payload["header"]
        except (ValueError, KeyError, TypeError):
            raise NotificationError(
                self.channel, f"HTTP {status} unreadable response", retryable=status >= 400
            ) from None
        if not header.get("isSuccessful") or status >= 400:
            # Header failures are request errors (sender key, template, parameters): sending again won't help.
            raise NotificationError(self.channel, self._describe(status, header), retryable=False)
        results = (payload.get("message") or {}).get("sendResults") or []
        refused = [r for r in results if r.get("resultCode") != 0]
        if refused:
            raise NotificationError(self.channel, self._describe(status, refused[0]), retryable=False)

    def _describe(self, status: int, result: Mapping[str, Any]) -> str:
        message = scrub_secrets(str(result.get("resultMessage", "")), self._secrets)[:120]
        return f"HTTP {status} resultCode={result.get('resultCode')} {message}"
