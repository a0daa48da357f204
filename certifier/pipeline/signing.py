"""Manifest signatures: Ed25519 over the exact bytes the API serves.

The private key lives in ``CERTIFIER_SIGNING_KEY_FILE`` or, by default, in
``<data dir>/manifest-signing.key`` (PKCS#8 PEM, mode 0600), created on first use. A signature is
detached and base64-encoded; anyone holding the public key (``GET /api/v1/signing-key``) checks a
downloaded manifest with :func:`verify` or ``certifier manifest verify``. Signing the served bytes
rather than a re-serialisation means a verifier never has to reproduce our JSON formatting.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import threading
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


class SigningKeyError(Exception):
    """The key file exists but is not an Ed25519 private key, or cannot be written."""


class Signer:
    """Signs with one Ed25519 key, loaded (or created) the first time it is needed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: Ed25519PrivateKey | None = None
        self._lock = threading.Lock()

    def key(self) -> Ed25519PrivateKey:
        with self._lock:
            if self._key is None:
                self._key = load_or_create(self.path)
            return self._key

    def sign(self, body: bytes) -> str:
        return base64.b64encode(self.key().sign(body)).decode()

    def public_pem(self) -> str:
        return public_pem(self.key().public_key())


def load_or_create(path: Path) -> Ed25519PrivateKey:
    """The key in ``path``; a new one written there (0600, atomically) if there is none."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            # link, not rename: if another process created the key meanwhile, keep its key
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise SigningKeyError(f"{path}: not an Ed25519 key")
    return loaded


def public_pem(key: Ed25519PublicKey) -> str:
    pem: bytes = key.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def verify(body: bytes, signature: str, public_key_pem: str | bytes) -> bool:
    """True if ``signature`` (base64) is the key's signature of exactly ``body``."""
    pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise SigningKeyError("not an Ed25519 public key")
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
        key.verify(raw, body)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True
