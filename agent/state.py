"""The agent's own state file: its credential, last generation and last applied desired state.

Written atomically (temp file + rename) so a crash never leaves a half-written credential.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from drivers.contract.protocol import AppliedState


def default_state_file() -> Path:
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/gpufabric/agent.json")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gpufabric" / "agent.json"


class AgentState(BaseModel):
    controller_url: str = ""
    hostname: str = ""
    credential: str | None = None
    generation: int = 0
    last_reported_hash: str | None = None
    applied: AppliedState | None = None
    # Failed applies of ``applied.revision`` in a row (0 once one succeeds): the retry back-off grows with it.
    apply_failures: int = 0
    # The sharing config of the applied desired state: the slice offers reported depend on it.
    sharing: dict[str, Any] | None = None
    finished_tasks: list[str] = []

    @classmethod
    def load(cls, path: Path) -> AgentState:
        if not path.exists():
            return cls()
        return cls.model_validate_json(path.read_text())

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(self.model_dump(mode="json"), indent=2))
        os.replace(tmp, path)


REPORTED_INVENTORY_NAME = "inventory.json"


def save_reported_inventory(state_file: Path, inventory_json: str) -> Path:
    """Keep the inventory the controller last accepted beside the state file (``inventory.json``, atomic).

    Other programs on the host read it instead of discovering the GPUs a second time: the Cyborg agent driver
    (``drivers.cyborg``) turns it into Cyborg devices. World-readable: it holds no secret."""
    path = state_file.with_name(REPORTED_INVENTORY_NAME)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(inventory_json)
    os.replace(tmp, path)
    return path


class StateInUse(Exception):
    """Another agent process holds this state file."""


@contextlib.contextmanager
def exclusive_state(path: Path) -> Iterator[None]:
    """Hold ``<state file>.lock`` (an advisory ``flock``, released when the process ends, however it ends) while
    the agent runs: two agents sharing a state file would overwrite each other's credential and generation.
    Raises :class:`StateInUse` naming the other process."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise StateInUse(
                f"another gpufabric-agent (pid {holder}) is using {path}; give each agent its own state "
                "(GPUFABRIC_STATE_DIR or --state-file)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)
