"""POSIX access ACLs on device nodes, read and written as the kernel's ``system.posix_acl_access`` extended
attribute: a version word, then (tag, permissions, id) entries ordered by tag and id (acl(5), the kernel's
``posix_acl_xattr.h``). Used when several leases share one node (the parent GPU of MIG instances leased to
different tenants, a time-sliced GPU): each lease's group gets its own entry."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterable
from pathlib import Path

XATTR = "system.posix_acl_access"
_VERSION = 2
_USER_OBJ, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x04, 0x08, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF
READ_WRITE = 0o6


def groups_acl(gids: Iterable[int]) -> bytes:
    """Owner read/write, the owning group and others nothing, each of ``gids`` read/write."""
    entries = [(_USER_OBJ, READ_WRITE, _UNDEFINED_ID), (_GROUP_OBJ, 0, _UNDEFINED_ID)]
    entries += [(_GROUP, READ_WRITE, gid) for gid in sorted(set(gids))]
    entries += [(_MASK, READ_WRITE, _UNDEFINED_ID), (_OTHER, 0, _UNDEFINED_ID)]
    return struct.pack("<I", _VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)


def acl_groups(data: bytes) -> set[int]:
    """The group ids named in an ACL (``groups_acl``'s inverse for its group entries)."""
    return {
        entry_id
        for tag, perm, entry_id in struct.iter_unpack("<HHI", data[4:])
        if tag == _GROUP and perm & READ_WRITE == READ_WRITE
    }


def read_acl(path: Path) -> bytes | None:
    """The node's access ACL, None when it has only its mode bits."""
    try:
        return os.getxattr(path, XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.ENOTSUP):
            return None
        raise


def write_acl(path: Path, data: bytes | None) -> None:
    """Set the node's access ACL, or remove it (``None``)."""
    if data is not None:
        os.setxattr(path, XATTR, data, follow_symlinks=False)
        return
    try:
        os.removexattr(path, XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.ENODATA, errno.ENOTSUP):
            raise
