"""Converge this host's device nodes on the leases the controller says it holds (``DesiredState.leases``).

Every cycle, for every per-lease node the host has (``agent.access.nodes.managed_nodes``) and every node an
earlier grant touched:

* held by no lease: the idle group (``access_idle_group``, default root), mode 0600, no ACL: only root opens it;
* held by one lease: that lease's group, mode 0660;
* held by several (MIG instances of one GPU or time-sliced shares leased to different tenants): the idle group,
  mode 0660 with an access ACL giving each lease's group read/write and the owning group nothing.

Granting a new lease is one transaction: the node's group, mode and ACL are recorded before each change and put
back, in reverse, if any of its nodes cannot be changed (missing, not a device node, a symlink); its group is then
given back and the lease reported in ``errors``. Grants already made are asserted again each cycle, which also
closes a node the driver created anew (reboot, module reload). The grants are kept in a state file next to the
agent's: after a restart the first cycle revokes what is held for leases the controller no longer lists and
removes the groups the agent made for them.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from agent.access.acl import groups_acl, read_acl, write_acl
from agent.access.groups import AccessError, CreatedGroups, GroupSource, MappedGroups
from agent.access.nodes import LeaseNodes, lease_nodes, managed_nodes, read_mig_minors
from drivers.contract.inventory import DeviceAccess, DeviceGrant, Inventory
from drivers.contract.protocol import LeasedSlice

log = logging.getLogger("gpufabric.agent.access")

IDLE_MODE = 0o600
GRANTED_MODE = 0o660
STATE_FILE_NAME = "device-access.json"


@dataclass(frozen=True)
class DeviceAccessConfig:
    dev_root: Path = Path("/dev")
    mig_minors_file: Path = Path("/proc/driver/nvidia-caps/mig-minors")
    # Pre-existing groups to hand out; empty: the agent creates ``gf-<lease>`` system groups.
    groups: tuple[str, ...] = ()
    idle_group: str = "root"
    # Regular files may stand in for device nodes (the simulator's); a real host's nodes are character devices.
    allow_regular_files: bool = False


class _Grant(BaseModel):
    group: str
    gid: int
    created: bool = False
    nodes: list[str] = Field(default_factory=list)
    visible: str = ""
    # Its lease is gone (or its nodes changed): its nodes are being closed; the group goes once they are.
    revoking: bool = False


class _State(BaseModel):
    grants: dict[str, _Grant] = Field(default_factory=dict)


@dataclass(frozen=True)
class _NodeState:
    gid: int
    mode: int
    acl: bytes | None


class DeviceAccessEnforcer:
    def __init__(self, config: DeviceAccessConfig, state_dir: Path) -> None:
        self.config = config
        self.state_path = state_dir / STATE_FILE_NAME
        self.groups: GroupSource = MappedGroups(config.groups) if config.groups else CreatedGroups()
        self.state = self._load()
        self.errors: dict[str, str] = {}

    # ---- state ----

    def _load(self) -> _State:
        try:
            return _State.model_validate_json(self.state_path.read_text())
        except FileNotFoundError:
            return _State()

    def _save(self) -> None:
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state.model_dump(mode="json"), sort_keys=True))
        os.replace(tmp, self.state_path)

    def report(self) -> DeviceAccess:
        """What is granted now (as the last converge left it), for the inventory."""
        return DeviceAccess(
            dev_root=str(self.config.dev_root),
            grants=[
                DeviceGrant(
                    lease=lease, unix_group=g.group, gid=g.gid, device_nodes=g.nodes, cuda_visible_devices=g.visible
                )
                for lease, g in sorted(self.state.grants.items())
                if not g.revoking
            ],
            errors=dict(sorted(self.errors.items())),
        )

    # ---- one node ----

    def _idle_gid(self) -> int:
        try:
            return grp.getgrnam(self.config.idle_group).gr_gid
        except KeyError:
            raise AccessError(f"access_idle_group {self.config.idle_group!r} does not exist") from None

    def _check_node(self, path: Path) -> os.stat_result:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise AccessError(f"{path}: no such device node") from None
        if stat.S_ISCHR(st.st_mode) or (self.config.allow_regular_files and stat.S_ISREG(st.st_mode)):
            return st
        raise AccessError(f"{path}: not a device node (refusing to change it)")

    def _read(self, path: Path) -> _NodeState:
        st = self._check_node(path)
        return _NodeState(st.st_gid, stat.S_IMODE(st.st_mode), read_acl(path))

    def _target(self, gids: set[int], idle_gid: int) -> _NodeState:
        if not gids:
            return _NodeState(idle_gid, IDLE_MODE, None)
        if len(gids) == 1:
            return _NodeState(next(iter(gids)), GRANTED_MODE, None)
        return _NodeState(idle_gid, GRANTED_MODE, groups_acl(gids))

    def _write(self, path: Path, want: _NodeState) -> None:
        """Close the node (0600), hand it to its group, then open it to that group (mode, ACL): it is never open
        to a new group with an old group's or others' permissions."""
        self._check_node(path)
        os.chmod(path, IDLE_MODE)  # with an ACL this also empties its mask: no named group keeps access meanwhile
        if want.acl is None:
            write_acl(path, None)
        os.chown(path, -1, want.gid, follow_symlinks=False)
        if want.mode != IDLE_MODE:
            os.chmod(path, want.mode)
        if want.acl is not None:
            write_acl(path, want.acl)

    def _apply(self, targets: dict[Path, _NodeState]) -> None:
        """Change every node to its target, or, if one cannot be changed, put back those already changed."""
        done: list[tuple[Path, _NodeState]] = []
        try:
            for path, want in sorted(targets.items()):
                before = self._read(path)
                if before == want:
                    continue
                done.append((path, before))
                self._write(path, want)
        except (OSError, AccessError) as exc:
            for path, before in reversed(done):
                with contextlib.suppress(OSError, AccessError):
                    self._write(path, before)
            if isinstance(exc, AccessError):
                raise
            raise AccessError(f"{exc.filename or ''}: {exc.strerror or exc}") from None

    # ---- converge ----

    def converge(self, slices: list[LeasedSlice], inventory: Inventory) -> DeviceAccess:
        """Grant the listed leases, revoke the rest; returns what is granted now."""
        root = self.config.dev_root
        minors = read_mig_minors(self.config.mig_minors_file)
        wanted, errors = lease_nodes(slices, inventory, root, minors)
        try:
            idle_gid = self._idle_gid()
        except AccessError as exc:  # nothing can be closed or granted: every lease says why
            self.errors = {**errors, **dict.fromkeys(wanted, str(exc))}
            return self.report()
        for lease, g in self.state.grants.items():
            # Not held any more, or its nodes changed (granted again below once the old grant is gone).
            if lease not in wanted or {str(p) for p in wanted[lease].nodes} != set(g.nodes):
                g.revoking = True
        holders: dict[Path, set[int]] = {}
        for g in self.state.grants.values():
            for node in g.nodes if not g.revoking else ():
                holders.setdefault(Path(node), set()).add(g.gid)
        nodes = managed_nodes(inventory, root, minors) | {Path(n) for g in self.state.grants.values() for n in g.nodes}
        failed: set[str] = set()
        for path in sorted(nodes):
            if not os.path.lexists(path):  # a capability node nothing opened yet: the driver makes it on first use
                if path in holders:
                    failed.add(str(path))
                continue
            try:
                self._apply({path: self._target(holders.get(path, set()), idle_gid)})
            except AccessError as exc:
                log.warning("device access: %s", exc)
                failed.add(str(path))
        for lease, g in list(self.state.grants.items()):
            if not g.revoking:
                if failed.intersection(g.nodes):
                    errors.setdefault(lease, f"could not assert access to {sorted(failed.intersection(g.nodes))}")
            elif not failed.intersection(g.nodes) or not any(os.path.lexists(n) for n in g.nodes):
                self._revoke(lease)  # its nodes no longer carry its group: the group can go
        self._save()
        for lease in sorted(set(wanted) - {k for k, g in self.state.grants.items() if not g.revoking}):
            try:
                self._grant(lease, wanted[lease], holders, idle_gid)
            except AccessError as exc:
                log.warning("device access for lease %s: %s", lease, exc)
                errors[lease] = str(exc)
        self.errors = errors
        self._save()
        return self.report()

    def _grant(self, lease: str, want: LeaseNodes, holders: dict[Path, set[int]], idle_gid: int) -> None:
        old = self.state.grants.pop(lease, None)  # an old grant of this lease still being revoked: reuse its group
        if old is not None:
            name, gid, created = old.group, old.gid, old.created
        else:
            name, gid, created = self.groups.acquire(lease, [g.group for g in self.state.grants.values()])
        targets = {node: self._target(holders.get(node, set()) | {gid}, idle_gid) for node in want.nodes}
        try:
            self._apply(targets)
        except AccessError:
            if old is not None:
                self.state.grants[lease] = old  # still revoking: the next converge closes its nodes, then its group
            else:
                self.groups.give_back(name, created)
            raise
        for node in want.nodes:
            holders.setdefault(node, set()).add(gid)
        nodes = sorted(str(p) for p in want.nodes)
        self.state.grants[lease] = _Grant(
            group=name, gid=gid, created=created, nodes=nodes, visible=",".join(want.visible)
        )
        self._save()
        log.info("lease %s: group %s (gid %d) may open %s", lease, name, gid, ", ".join(nodes))

    def _revoke(self, lease: str) -> None:
        """Forget the grant and give its group back (its nodes were closed already)."""
        g = self.state.grants.pop(lease)
        self._save()
        try:
            self.groups.give_back(g.group, g.created)
        except AccessError as exc:
            log.warning("lease %s: could not remove group %s: %s", lease, g.group, exc)
        log.info("lease %s: revoked group %s's access to %s", lease, g.group, ", ".join(g.nodes))
