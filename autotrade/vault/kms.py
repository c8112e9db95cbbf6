"""KMS providers: AWS KMS through boto3, and a local provider for the embedded default.

Both bind every data key to an encryption context (user and account): decrypting with another context
fails, as AWS KMS does. Calls are counted by kind for the cost benchmark.
"""

from __future__ import annotations

import json
import os
import secrets
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from autotrade.secret_files import load_or_create_key

Context = dict[str, str]


class KmsError(Exception):
    """A KMS call failed, or a ciphertext does not open under this key and context."""


@dataclass(frozen=True, slots=True)
class DataKey:
    plaintext: bytes
    ciphertext: bytes

    def __repr__(self) -> str:
        return f"DataKey(ciphertext={len(self.ciphertext)} bytes)"


class KmsProvider(Protocol):
    key_id: str
    calls: Counter[str]

    def generate_data_key(self, context: Context) -> DataKey: ...

    def decrypt(self, ciphertext: bytes, context: Context) -> bytes: ...

    def re_encrypt(self, ciphertext: bytes, context: Context, new_key_id: str | None = None) -> bytes: ...


def _aad(context: Context) -> bytes:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


class LocalKms:
    """AES-GCM under a master key kept in a 0600 file. Key rotation adds a new master key file version."""

    MAGIC = b"LKMS1"

    def __init__(self, master_key_path: Path, key_id: str = "local") -> None:
        self.key_id = key_id
        self._path = master_key_path
        self._master = AESGCM(load_or_create_key(master_key_path))
        self.calls: Counter[str] = Counter()

    def generate_data_key(self, context: Context) -> DataKey:
        self.calls["GenerateDataKey"] += 1
        plaintext = secrets.token_bytes(32)
        return DataKey(plaintext, self._wrap(plaintext, context))

    def decrypt(self, ciphertext: bytes, context: Context) -> bytes:
        self.calls["Decrypt"] += 1
        if not ciphertext.startswith(self.MAGIC):
            raise KmsError("ciphertext was not made by this key")
        nonce, body = ciphertext[5:17], ciphertext[17:]
        try:
            return self._master.decrypt(nonce, body, _aad(context))
        except InvalidTag:
            raise KmsError("ciphertext does not open under this key and encryption context") from None

    def re_encrypt(self, ciphertext: bytes, context: Context, new_key_id: str | None = None) -> bytes:
        self.calls["ReEncrypt"] += 1
        plaintext = self.decrypt(ciphertext, context)
        self.calls["Decrypt"] -= 1  # one ReEncrypt, as AWS counts it
        return self._wrap(plaintext, context)

    def _wrap(self, plaintext: bytes, context: Context) -> bytes:
        nonce = os.urandom(12)
        return self.MAGIC + nonce + self._master.encrypt(nonce, plaintext, _aad(context))


class AwsKms:
    """AWS KMS via boto3 (``endpoint_url`` points it at moto's server in tests)."""

    def __init__(
        self,
        key_id: str,
        *,
        region: str = "ap-northeast-2",
        endpoint_url: str | None = None,
        client: Any | None = None,
        boto_session: Any | None = None,
    ) -> None:
        import boto3

        self.key_id = key_id
        if client is None:
            session = boto_session or boto3.session.Session()
            client = session.client("kms", region_name=region, endpoint_url=endpoint_url)
        self._kms = client
        self.calls: Counter[str] = Counter()

    def generate_data_key(self, context: Context) -> DataKey:
        self.calls["GenerateDataKey"] += 1
        try:
            r = self._kms.generate_data_key(KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=context)
        except Exception as exc:
            raise KmsError(f"GenerateDataKey failed: {type(exc).__name__}") from None
        return DataKey(r["Plaintext"], r["CiphertextBlob"])

    def decrypt(self, ciphertext: bytes, context: Context) -> bytes:
        self.calls["Decrypt"] += 1
        try:
            r = self._kms.decrypt(CiphertextBlob=ciphertext, EncryptionContext=context, KeyId=self.key_id)
        except Exception as exc:
            raise KmsError(f"Decrypt failed: {type(exc).__name__}") from None
        plaintext: bytes = r["Plaintext"]
        return plaintext

    def re_encrypt(self, ciphertext: bytes, context: Context, new_key_id: str | None = None) -> bytes:
        self.calls["ReEncrypt"] += 1
        try:
            r = self._kms.re_encrypt(
                CiphertextBlob=ciphertext,
                SourceEncryptionContext=context,
                DestinationKeyId=new_key_id or self.key_id,
                DestinationEncryptionContext=context,
            )
        except Exception as exc:
            raise KmsError(f"ReEncrypt failed: {type(exc).__name__}") from None
        blob: bytes = r["CiphertextBlob"]
        return blob


def seal(data_key: bytes, plaintext: str, aad: bytes) -> str:
    """AES-GCM under a data key; returns base64 text of nonce + ciphertext."""
    import base64

    nonce = os.urandom(12)
    return base64.b64encode(nonce + AESGCM(data_key).encrypt(nonce, plaintext.encode(), aad)).decode()


def open_sealed(data_key: bytes, sealed: str, aad: bytes) -> str:
    import base64

    raw = base64.b64decode(sealed)
    try:
        return AESGCM(data_key).decrypt(raw[:12], raw[12:], aad).decode()
    except InvalidTag:
        raise KmsError("sealed value does not open under this data key") from None
