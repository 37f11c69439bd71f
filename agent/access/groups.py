"""Where a lease's Unix group comes from.

* ``CreatedGroups`` (the default; the agent runs as root): a system group ``gf-<first 12 characters of the lease
  id>`` made with ``groupadd --system`` when the lease is granted and removed with ``groupdel`` when it is revoked.
* ``MappedGroups`` (``access_groups`` set: the agent may not add groups, e.g. a directory service owns them): a
  pool of groups that already exist; each granted lease takes a free one, given back on revoke. The agent must be
  allowed to give its device nodes to these groups (root, or a member of each group when it owns the nodes).

Either way the group name and id are reported with the grant; who is put into the group (the site's job launcher,
``setpriv --groups``, a directory) is outside the agent (``docs/security.md``).
"""

from __future__ import annotations

import grp
import re
import subprocess
from collections.abc import Iterable, Sequence
from typing import Protocol

GROUP_PREFIX = "gf-"
_NOT_NAME = re.compile(r"[^a-z0-9]")


class AccessError(Exception):
    """A grant could not be made (the message says why, for the lease's reason)."""


def lease_group_name(lease: str) -> str:
    short = _NOT_NAME.sub("", lease.lower())[:12]
    if not short:
        raise AccessError(f"lease id {lease!r} gives no group name")
    return GROUP_PREFIX + short


def gid_of(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class GroupSource(Protocol):
    def acquire(self, lease: str, taken: Iterable[str]) -> tuple[str, int, bool]:
        """(group name, gid, whether the agent created it) for a lease; ``taken``: groups other leases hold."""
        ...

    def give_back(self, name: str, created: bool) -> None: ...


def _run(command: Sequence[str]) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise AccessError(f"{command[0]}: {exc.strerror}") from None
    if done.returncode != 0:
        raise AccessError(f"{' '.join(command)}: {done.stderr.strip() or f'exit status {done.returncode}'}")


class CreatedGroups:
    def acquire(self, lease: str, taken: Iterable[str]) -> tuple[str, int, bool]:
        name = lease_group_name(lease)
        gid = gid_of(name)
        if gid is not None:  # made by this agent before a restart that lost its record, or by an admin
            return name, gid, False
        _run(["groupadd", "--system", name])
        gid = gid_of(name)
        if gid is None:
            raise AccessError(f"groupadd --system {name} succeeded but the group cannot be looked up")
        return name, gid, True

    def give_back(self, name: str, created: bool) -> None:
        if created and gid_of(name) is not None:
            _run(["groupdel", name])


class MappedGroups:
    def __init__(self, pool: Sequence[str]) -> None:
        self.pool = list(pool)

    def acquire(self, lease: str, taken: Iterable[str]) -> tuple[str, int, bool]:
        busy = set(taken)
        for name in self.pool:
            if name in busy:
                continue
            gid = gid_of(name)
            if gid is None:
                raise AccessError(f"access_groups names {name!r}, which does not exist on this host")
            return name, gid, False
        raise AccessError(f"no free group in access_groups ({len(self.pool)} configured, all held by leases)")

    def give_back(self, name: str, created: bool) -> None:
        return None
