"""Field encryption: master keys, per-client data keys, blind indexes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# What a field of an erased client reads as, everywhere.
ERASED = "[erased]"

_V_MASTER = b"\x01"  # encrypted directly under a master key: 1 + key id (8) + nonce + ct
_V_DATA = b"\x02"  # encrypted under a client's data key: 1 + nonce + ct
_NONCE = 12
_KID = 8


class CryptoError(Exception):
    """Base for every encryption problem; the message is safe to show an operator."""


class KeyConfigError(CryptoError):
    """The configured keys are missing or malformed."""


class UnknownKeyError(CryptoError):
    """Data was written with a key that is no longer configured."""


class TamperedError(CryptoError):
    """Ciphertext failed authentication: it was changed or the key is wrong."""


class ErasedError(CryptoError):
    """The client's data key was destroyed."""


def generate_key() -> str:
    """A new 256-bit master key, URL-safe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def _decode_key(text: str) -> bytes:
    raw = text.strip()
    try:
        key = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (ValueError, TypeError) as exc:
        raise KeyConfigError("PROBONO_ENCRYPTION_KEYS: a key is not valid base64") from exc
    if len(key) != 32:
        raise KeyConfigError(
            f"PROBONO_ENCRYPTION_KEYS: each key must be 32 bytes of base64, got {len(key)} bytes"
        )
    return key


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


@dataclass(frozen=True)
class MasterKey:
    """One master key with its derived sub-keys."""

    raw: bytes

    @property
    def kid(self) -> bytes:
        return hashlib.sha256(b"probono-kid" + self.raw).digest()[:_KID]

    @property
    def kid_hex(self) -> str:
        return self.kid.hex()

    @property
    def enc_key(self) -> bytes:
        return _hkdf(self.raw, b"probono/encrypt")

    @property
    def index_key(self) -> bytes:
        return _hkdf(self.raw, b"probono/blind-index")


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, blob: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)
    except (InvalidTag, ValueError) as exc:
        raise TamperedError("encrypted data failed authentication (changed, or wrong key)") from exc


class Vault:
    """Encrypts and decrypts fields; holds the master keys, newest first."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise KeyConfigError("PROBONO_ENCRYPTION_KEYS is empty")
        self.keys = [MasterKey(_decode_key(k)) for k in keys]
        self._by_kid = {k.kid: k for k in self.keys}
        self._enc_keys = {k.kid: k.enc_key for k in self.keys}
        self._index_keys = [k.index_key for k in self.keys]

    @classmethod
    def from_setting(cls, value: str) -> Vault:
        return cls([k for k in value.split(",") if k.strip()])

    @property
    def newest(self) -> MasterKey:
        return self.keys[0]

    # -- master-key encryption (staff data, wrapped data keys, program data) --

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Encrypt under the newest master key."""
        k = self.newest
        return _V_MASTER + k.kid + _seal(self._enc_keys[k.kid], plaintext, aad)

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        """Decrypt something sealed under any configured master key."""
        if not blob or blob[:1] != _V_MASTER:
            raise TamperedError("not a master-key ciphertext")
        kid = blob[1 : 1 + _KID]
        key = self._enc_keys.get(kid)
        if key is None:
            raise UnknownKeyError(
                f"data was encrypted with key {kid.hex()}, which is not in PROBONO_ENCRYPTION_KEYS"
            )
        return _open(key, blob[1 + _KID :], aad)

    def key_id_of(self, blob: bytes) -> str:
        return blob[1 : 1 + _KID].hex()

    def seal_text(self, text: str, aad: str = "") -> bytes:
        return self.seal(text.encode("utf-8"), aad.encode())

    def open_text(self, blob: bytes | None, aad: str = "") -> str | None:
        if blob is None:
            return None
        return self.open(blob, aad.encode()).decode("utf-8")

    # -- per-client data keys --

    def new_data_key(self) -> tuple[bytes, bytes]:
        """A fresh client data key: (raw key, wrapped key to store)."""
        dek = AESGCM.generate_key(bit_length=256)
        return dek, self.wrap(dek)

    def wrap(self, dek: bytes) -> bytes:
        return self.seal(dek, b"probono/dek")

    def unwrap(self, wrapped: bytes | None) -> bytes:
        if wrapped is None:
            raise ErasedError("this client's data was erased")
        return self.open(wrapped, b"probono/dek")

    def rewrap(self, wrapped: bytes) -> bytes:
        """Re-wrap a data key under the newest master key (rotation)."""
        return self.wrap(self.unwrap(wrapped))

    # -- blind indexes --

    def blind_index(self, kind: str, value: str) -> str:
        """Keyed hash of a normalised value under the newest key, for equality lookups."""
        return self._index(self._index_keys[0], kind, value)

    def blind_indexes(self, kind: str, value: str) -> list[str]:
        """The value's hash under every configured key (lookups work mid-rotation)."""
        return [self._index(k, kind, value) for k in self._index_keys]

    @staticmethod
    def _index(key: bytes, kind: str, value: str) -> str:
        return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


class DataKey:
    """A client's unwrapped data key, encrypting that client's fields."""

    def __init__(self, raw: bytes | None) -> None:
        self._raw = raw

    @property
    def erased(self) -> bool:
        return self._raw is None

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        if self._raw is None:
            raise ErasedError("cannot write data for an erased client")
        return _V_DATA + _seal(self._raw, plaintext, aad)

    def open(self, blob: bytes, aad: bytes = b"") -> bytes:
        if self._raw is None:
            raise ErasedError("this client's data was erased")
        if not blob or blob[:1] != _V_DATA:
            raise TamperedError("not a client-key ciphertext")
        return _open(self._raw, blob[1:], aad)

    def seal_text(self, text: str, aad: str = "") -> bytes:
        return self.seal(text.encode("utf-8"), aad.encode())

    def open_text(self, blob: bytes | None, aad: str = "") -> str | None:
        """Decrypt a text field; an erased client's field reads as ERASED."""
        if blob is None:
            return None
        if self._raw is None:
            return ERASED
        return self.open(blob, aad.encode()).decode("utf-8")

    def seal_json(self, value: Any, aad: str = "") -> bytes:
        return self.seal_text(json.dumps(value, ensure_ascii=False, separators=(",", ":")), aad)

    def open_json(self, blob: bytes | None, aad: str = "") -> Any:
        if blob is None:
            return None
        if self._raw is None:
            return None
        return json.loads(self.open(blob, aad.encode()).decode("utf-8"))
