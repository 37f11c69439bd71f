"""What a ready lease hands its tenant (``access``: kubeconfigs, tokens, SSH details), kept encrypted in the store.

A backend's provision result may carry ``access``; :func:`split_access` takes it out of the result before the result
is stored (the result is shown, logged and audited as before; ``access`` never is). The access is sealed with
Fernet (AES-128-CBC + HMAC-SHA256, ``cryptography``) into ``leases.access_sealed`` and opened only to answer the
lease's own tenant or an admin (``GET /v1/leases/{id}``, the create answer). It is dropped when the lease leaves
``ready`` (``controller.leases.state.transition``): a released, expired or failed lease hands out nothing.

The key: ``lease_access_key`` (GPUFABRIC_LEASE_ACCESS_KEY, comma-separated Fernet keys; the first encrypts, every
one decrypts, so a key is rotated by putting the new one first), else one made once in
``<data_dir>/lease-access.key`` (mode 0600). Replicas on one PostgreSQL store must be given the same key.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

log = logging.getLogger("gpufabric.leases")

KEY_FILE = "lease-access.key"


def split_access(result: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The result without its ``access``, and the access (None when the backend gave none)."""
    if "access" not in result:
        return result, None
    rest = {k: v for k, v in result.items() if k != "access"}
    access = result["access"]
    return rest, access if isinstance(access, dict) and access else None


class AccessVault:
    """Seals and opens lease access with the controller's key(s)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("lease access: at least one key is needed")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    @classmethod
    def ephemeral(cls) -> AccessVault:
        """A key of this process only (a lease service built without settings: tools, tests)."""
        return cls([Fernet.generate_key()])

    @classmethod
    def from_settings(cls, key: str | None, data_dir: Path) -> AccessVault:
        """The configured keys, else the key file in ``data_dir`` (made now, 0600, if missing)."""
        if key:
            try:
                return cls([k.strip().encode() for k in key.split(",") if k.strip()])
            except ValueError as exc:
                raise ValueError(f"lease_access_key: not Fernet keys (32 url-safe base64 bytes each): {exc}") from None
        path = data_dir / KEY_FILE
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            # Written whole to a file of this process, then linked into place: the first worker's key wins and no
            # worker ever reads a half-written key file.
            tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(8)}")  # one per caller, threads too
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
                out.write(Fernet.generate_key())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another worker made it first
            finally:
                tmp.unlink()
        return cls([path.read_bytes().strip()])

    def seal(self, access: dict[str, Any] | None) -> str | None:
        if not access:
            return None
        return self._fernet.encrypt(json.dumps(access, sort_keys=True).encode()).decode()

    def open(self, sealed: str | None, lease_id: str) -> dict[str, Any] | None:
        if not sealed:
            return None
        try:
            opened: dict[str, Any] = json.loads(self._fernet.decrypt(sealed.encode()))
        except InvalidToken:
            log.warning("lease %s: its access was sealed with a key this controller does not have", lease_id)
            return None
        return opened
