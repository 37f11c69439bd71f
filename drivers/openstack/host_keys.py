"""SSH host keys gpufabric makes for the machines it provisions, so a tenant knows the fingerprint before it connects.

Trust on first use would have the tenant accept whatever key answers first. Instead gpufabric generates the machine's
Ed25519 host key pair itself, hands the pair to the machine in its cloud-init user data (``ssh_keys``, with
``ssh_genkeytypes: []`` so cloud-init makes no other host keys) and keeps only the public half, tagged on the
Nova server's metadata / the Ironic node's ``extra`` (``gpufabric_ssh_host_key``), from which the lease's access
reports it with its fingerprint. The private half lives only in the user data / config drive, which the cloud
shows to the project that owns the machine and to cloud admins (and Ironic masks it in API answers).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, SecretStr

HOST_KEY_TAG = "gpufabric_ssh_host_key"


class SshHostKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    private_openssh: SecretStr  # "-----BEGIN OPENSSH PRIVATE KEY-----..."
    public: str  # "ssh-ed25519 AAAA..."

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)


def new_host_key() -> SshHostKey:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return SshHostKey(private_openssh=SecretStr(private), public=public)


def key_blob(public_line: str) -> bytes:
    """The key blob of an OpenSSH public key line (``<type> <base64> [comment]``); ValueError when it is not one:
    the base64 must decode and the blob must name the same key type as the line."""
    parts = public_line.strip().split()
    if len(parts) < 2:
        raise ValueError("expected '<type> <base64> [comment]'")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is not base64") from None
    if len(blob) < 4:
        raise ValueError("the key is too short")
    (size,) = struct.unpack(">I", blob[:4])
    if blob[4 : 4 + size].decode(errors="replace") != parts[0]:
        raise ValueError(f"the key data is not a {parts[0]} key")
    return blob


def fingerprint(public_line: str) -> str:
    """``SHA256:<base64, no padding>``, as ``ssh-keygen -lf`` and ssh's host key prompt print it."""
    digest = hashlib.sha256(key_blob(public_line)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
