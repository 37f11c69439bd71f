"""The GPU Operator's ``nvidia.com/mig.config`` workflow, as NVIDIA's mig-manager runs it, done by the agent.

mig-manager's behaviour, which this follows: the node label ``nvidia.com/mig.config`` names a config in the
mig-parted file mounted from a ConfigMap. The config is acted on when the label's value changes and once at
start; an empty or removed label is ignored. A name the file does not hold is ``failed`` at once. A config
already in place is ``success`` without ``pending``. Otherwise ``nvidia.com/mig.config.state`` becomes
``pending``, the config is applied, and the state ``success`` or ``failed``. A failure is not retried until
the label changes (or the agent restarts).

Where gpufabric differs (docs/mig.md, "The nvidia.com/mig.config label"): GPU clients are not stopped
first. Instances in use are kept, as every gpufabric MIG change does; a config that cannot be laid out
around them is ``failed`` and the GPUs are left as they were, naming the busy instance. A MIG mode change
waiting for a GPU reset stays ``pending`` and is tried again each cycle until the reset happened (the agent
does not reboot; mig-manager's ``rebooting`` state is never set). Removing the state label retries a failed
config. When the controller's desired state sets this host's MIG layout, that layout wins: a label naming a
different config is ``failed`` with the reason, and is acted on again when either side changes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from agent.converge import converge_selected, describe_mig_report
from agent.mig.apply import plan_from_nvml
from agent.mig.config import MigError, MigPartedConfig, load_mig_config
from drivers.contract.desired import parse_mig_desired
from drivers.contract.protocol import MigDesired

log = logging.getLogger("gpufabric.agent.kube")

MIG_CONFIG_LABEL = "nvidia.com/mig.config"
MIG_CONFIG_STATE_LABEL = "nvidia.com/mig.config.state"
MigConfigState = Literal["pending", "success", "failed"]


class MigConfigLabel:
    """Acts on the node's ``nvidia.com/mig.config`` and keeps the state to write to ``.state``."""

    def __init__(self, config_file: Path) -> None:
        self.config_file = config_file
        self.state: MigConfigState | None = None
        self.message = ""
        # (label value, the controller's layout it was judged against) last acted on
        self._handled: tuple[str, str | None] | None = None

    def due(self, labels: dict[str, str], controller_mig: MigDesired | None) -> str | None:
        """The label value to act on in this cycle, or None."""
        value = labels.get(MIG_CONFIG_LABEL, "")
        if not value:
            return None
        if (value, _fingerprint(controller_mig)) != self._handled:
            return value
        if self.state == "pending":
            return value  # waiting for a GPU reset
        if self.state == "failed" and MIG_CONFIG_STATE_LABEL not in labels:
            return value  # an operator removed the state label: try again
        return None

    def run(
        self,
        value: str,
        *,
        controller_mig: MigDesired | None,
        leased: dict[int, set[int]],
        sim_host: Any | None,
        announce_pending: Callable[[], None],
    ) -> bool:
        """Apply the config ``value`` names; sets ``state`` and ``message``. True when GPUs changed.

        ``announce_pending`` writes ``pending`` to the node before the first GPU is touched. NVML must be open.
        """
        self._handled = (value, _fingerprint(controller_mig))
        try:
            config = load_mig_config(self.config_file)
            conflict = _conflict(value, config, controller_mig)
            if conflict:
                return self._finish("failed", conflict)
            if value not in config.configs:
                known = ", ".join(sorted(config.configs))
                return self._finish("failed", f"no config named {value!r} in {self.config_file} (configs: {known})")
            plan = plan_from_nvml(config, value, leased=leased)
            if all(g.status == "untouched" for g in plan.gpus):
                return self._finish("success", "already applied")
            if plan.blocked:  # refused before any GPU is touched, so no GPU is left half-way
                blocked = [f"GPU {g.index} blocked: {'; '.join(g.blockers) or g.reason}" for g in plan.gpus
                           if g.status == "blocked"]  # fmt: skip
                return self._finish("failed", "; ".join(blocked))
            self.state = "pending"
            announce_pending()
            report = converge_selected(config, value, sim_host, leased)
        except MigError as exc:
            return self._finish("failed", str(exc))
        except Exception as exc:  # an NVML or file error must not leave the node pending forever
            log.exception("applying %s=%s failed", MIG_CONFIG_LABEL, value)
            return self._finish("failed", f"{type(exc).__name__}: {exc}")
        changed = any(g.operations for g in report.gpus)
        if report.converged:
            return self._finish("success", describe_mig_report(report), changed=changed)
        if report.pending_reset and not report.blocked and not report.failed:
            return self._finish("pending", "waiting for a GPU reset: " + describe_mig_report(report), changed=changed)
        return self._finish("failed", describe_mig_report(report), changed=changed)

    def _finish(self, state: MigConfigState, message: str, *, changed: bool = False) -> bool:
        value = self._handled[0] if self._handled else "?"
        self.state, self.message = state, message
        level = logging.WARNING if state == "failed" else logging.INFO
        log.log(level, "%s=%s: %s: %s", MIG_CONFIG_LABEL, value, state, message)
        return changed


def _fingerprint(mig: MigDesired | None) -> str | None:
    return None if mig is None else mig.model_dump_json()


def _conflict(value: str, config: MigPartedConfig, controller_mig: MigDesired | None) -> str | None:
    """Why the label may not act while the controller sets the MIG layout (None: no conflict). The same
    config, entry for entry, is no conflict: the two ask for one layout."""
    if controller_mig is None:
        return None
    controller = parse_mig_desired(controller_mig, source="controller desired state")
    if config.configs.get(value) == controller.configs[controller_mig.selected]:
        return None
    return (
        f"not applied: the controller's desired state sets this host's MIG layout (config "
        f"{controller_mig.selected!r}), and it wins; clear the host's or its pool's MIG layout on the controller, "
        f"or remove the label"
    )
