"""Converge this host on the desired state the controller sent, with the node-management functions.

The one place the agent loop touches GPUs. NVML must be initialised by the caller
(``drivers.nvml.session.open_nvml``). The documents are parsed with the wire contract's models
(``drivers.contract.desired``), the same the controller validated them with; MIG goes through
``agent.mig.apply.converge_mig``, sharing through ``agent.sharing.apply.apply_sharing``. Whatever goes
wrong in a step (a document the controller should have refused, an NVML error, a bug) is reported in the
returned ``AppliedState`` and never raised: the agent loop keeps reporting. A MIG mode change that waits for a GPU reset
is reported as not converged, except on a simulated host, where the agent performs the reset
itself (as an operator would with ``nvidia-smi -r`` on an idle GPU) so dry runs reach the layout.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.mig.apply import MigApplyReport, converge_mig
from agent.mig.config import MigError, MigPartedConfig
from agent.sharing.apply import apply_sharing
from agent.sharing.errors import SharingError
from drivers.contract.desired import parse_mig_desired, parse_sharing_desired
from drivers.contract.inventory import Inventory
from drivers.contract.protocol import AppliedState, DesiredState, MigDesired, SharingDesired

log = logging.getLogger("gpufabric.agent.converge")


def leased_instances(desired: DesiredState, inventory: Inventory) -> dict[int, set[int]]:
    """GPU index -> GPU-instance ids that the desired state's leases hold (found by MIG UUID)."""
    held = {s.mig_uuid for s in desired.leases if s.mig_uuid}
    out: dict[int, set[int]] = {}
    for gpu in inventory.gpus:
        for m in gpu.mig_instances:
            if m.uuid and m.uuid in held:
                out.setdefault(gpu.index, set()).add(m.gpu_instance_id)
    return out


def pinned_instances(desired: DesiredState, inventory: Inventory) -> dict[int, list[tuple[str, int]]]:
    """GPU index -> (profile, placement start) of the MIG instances the controller placed for leases and this
    host has not created yet (no MIG UUID in the lease): the agent creates them exactly there."""
    index = {gpu.uuid: gpu.index for gpu in inventory.gpus}
    out: dict[int, list[tuple[str, int]]] = {}
    for s in desired.leases:
        pending = s.kind == "mig" and s.mig_uuid is None and s.profile and s.placement_start is not None
        if pending and s.device_uuid in index:
            out.setdefault(index[s.device_uuid], []).append((s.profile, s.placement_start))  # type: ignore[arg-type]
    return out


def converge_selected(
    config: MigPartedConfig,
    selected: str,
    sim_host: Any | None,
    leased: dict[int, set[int]],
    pinned: dict[int, list[tuple[str, int]]] | None = None,
) -> MigApplyReport:
    """Converge on one config of a parsed mig-parted document, keeping ``leased`` instances (and any with
    running processes) and creating ``pinned`` ones where the controller placed them; on a simulated host a
    MIG mode change waiting for a GPU reset gets that reset."""
    report: MigApplyReport = converge_mig(config, selected, leased=leased, pinned=pinned)
    if report.pending_reset and sim_host is not None:
        for gpu in report.gpus:
            if gpu.status == "pending-reset":
                log.info("simulated host: resetting GPU %d to apply its MIG mode change", gpu.index)
                sim_host.reset_gpu(gpu.index)
        report = converge_mig(config, selected, leased=leased, pinned=pinned)
    return report


def describe_mig_report(report: MigApplyReport) -> str:
    """One line: how many GPUs changed, or what stands in the way on each GPU that did not converge."""
    if report.converged:
        changed = sum(1 for g in report.gpus if g.status == "changed")
        return f"converged ({changed} GPU(s) changed)"
    return "; ".join(
        f"GPU {g.index} {g.status}: {g.reason or ', '.join(g.blockers)}"
        for g in report.gpus
        if g.status not in ("untouched", "changed")
    )


def _apply_mig(
    mig: MigDesired, sim_host: Any | None, leased: dict[int, set[int]], pinned: dict[int, list[tuple[str, int]]]
) -> tuple[bool, str]:
    config = parse_mig_desired(mig, source="controller desired state")
    report = converge_selected(config, mig.selected, sim_host, leased, pinned)
    return report.converged, f"mig {mig.selected}: {describe_mig_report(report)}"


def _apply_sharing(sharing: SharingDesired, state_dir: Path) -> tuple[bool, str]:
    config = parse_sharing_desired(sharing, "controller")
    report = apply_sharing(config, config_name="controller", state_dir=state_dir)
    return True, f"sharing {report.strategy}: {'changed' if report.changed else 'unchanged'}"


def apply_desired(
    desired: DesiredState, *, sim_host: Any | None, state_dir: Path, inventory: Inventory | None = None
) -> AppliedState:
    """Apply MIG then sharing; never raises — what the host cannot take (or any failure) it says instead.

    ``inventory`` (this cycle's) finds the MIG instances the desired state's leases hold, which are kept, and
    the GPUs of the instances the controller placed for leases, which are created where it placed them.
    """
    messages: list[str] = []
    ok = True
    if desired.mig is not None:
        try:
            leased = leased_instances(desired, inventory) if inventory is not None else {}
            pinned = pinned_instances(desired, inventory) if inventory is not None else {}
            step_ok, message = _apply_mig(desired.mig, sim_host, leased, pinned)
        except MigError as exc:
            step_ok, message = False, f"mig {desired.mig.selected}: {exc}"
        except Exception as exc:
            log.exception("applying MIG config %r failed", desired.mig.selected)
            step_ok, message = False, f"mig {desired.mig.selected}: failed ({type(exc).__name__}: {exc})"
        ok &= step_ok
        messages.append(message)
    if desired.sharing is not None:
        try:
            step_ok, message = _apply_sharing(desired.sharing, state_dir)
        except SharingError as exc:
            step_ok, message = False, f"sharing: {exc}"
        except Exception as exc:
            log.exception("applying the sharing config failed")
            step_ok, message = False, f"sharing: failed ({type(exc).__name__}: {exc})"
        ok &= step_ok
        messages.append(message)
    if not messages:
        messages.append("nothing to apply")
    return AppliedState(revision=desired.revision, ok=ok, message="; ".join(messages), at=datetime.now(UTC))
