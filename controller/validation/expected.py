"""The bus bandwidth a healthy interconnect should reach, in GB/s (nccl-tests ``busbw``).

Across nodes the network is the bottleneck: busbw approaches the per-node network rate, so the
expected figure is the instance's network bandwidth in Gbps / 8 (EFA on AWS: g6.12xlarge 40 Gbps ->
5 GB/s, p4d.24xlarge 400 Gbps -> 50 GB/s, p5.48xlarge 3200 Gbps -> 400 GB/s). Within one node it is
the GPU-to-GPU link: NVLink by generation, or PCIe for GPUs without NVLink. The single-node figures
are deliberately conservative (below what tuned systems print) because an all_reduce on 8 GPUs
rarely reaches the link's unidirectional rate; admins override them per pool or per request with
numbers measured on their own known-good hardware. Sources and measured values: docs/validation.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.eks.catalog import builtin_facts


@dataclass(frozen=True)
class Interconnect:
    name: str
    # What NVIDIA specifies per GPU, one direction, GB/s.
    link_gbps: float
    # The busbw we expect a healthy 8-GPU all_reduce to reach at the largest sizes (conservative).
    expected_busbw_gbps: float


NVLINK5 = Interconnect("NVLink 5 (B200)", 900.0, 650.0)
NVLINK4 = Interconnect("NVLink 4 (H100/H200 SXM)", 450.0, 360.0)
NVLINK3 = Interconnect("NVLink 3 (A100 SXM)", 300.0, 230.0)
NVLINK2 = Interconnect("NVLink 2 (V100 SXM2)", 150.0, 120.0)
PCIE5 = Interconnect("PCIe Gen5 x16", 64.0, 24.0)
PCIE4 = Interconnect("PCIe Gen4 x16", 32.0, 12.0)
PCIE3 = Interconnect("PCIe Gen3 x16", 16.0, 6.0)

# Substring of the NVML device name -> interconnect. First match wins: specific before generic.
_BY_MODEL: tuple[tuple[str, Interconnect], ...] = (
    ("B200", NVLINK5),
    ("GB200", NVLINK5),
    ("H100 PCIE", PCIE5),
    ("H100 NVL", PCIE5),
    ("H100", NVLINK4),
    ("H200 NVL", PCIE5),
    ("H200", NVLINK4),
    ("H800", NVLINK4),
    ("A100-PCIE", PCIE4),
    ("A100 PCIE", PCIE4),
    ("A100", NVLINK3),
    ("A800", NVLINK3),
    ("V100-SXM", NVLINK2),
    ("V100", PCIE3),
    ("L40", PCIE4),
    ("L4", PCIE4),
    ("A10", PCIE4),
    ("A16", PCIE4),
    ("T4", PCIE3),
)


def interconnect_for_model(model: str) -> Interconnect | None:
    upper = model.upper()
    for key, link in _BY_MODEL:
        if key in upper:
            return link
    return None


@dataclass(frozen=True)
class Expected:
    busbw_gbps: float | None
    source: str

    def as_dict(self) -> dict[str, object]:
        return {"busbw_gbps": self.busbw_gbps, "source": self.source}


def network_expected(instance_type: str | None, network_gbps: float | None = None) -> Expected:
    """Multi-node: the per-node network rate in GB/s (Gbps / 8)."""
    if network_gbps:
        return Expected(round(network_gbps / 8.0, 3), f"network {network_gbps:g} Gbps / 8")
    if instance_type:
        facts = builtin_facts(instance_type)
        if facts is not None and facts.network_gbps:
            kind = "EFA" if facts.efa_supported else "network"
            return Expected(
                round(facts.network_gbps / 8.0, 3), f"{instance_type} {kind} {facts.network_gbps:g} Gbps / 8"
            )
    return Expected(None, "unknown network bandwidth (set expected_busbw_gbps or the host's network label)")


def single_node_expected(gpu_model: str | None, gpus: int) -> Expected:
    """Single node: the NVLink generation (or PCIe) of the GPU model."""
    if gpus <= 1:
        return Expected(0.0, "one GPU: busbw is 0 by definition, only correctness is judged")
    link = interconnect_for_model(gpu_model or "")
    if link is None:
        return Expected(None, f"unknown interconnect for GPU model {gpu_model!r} (set expected_busbw_gbps)")
    return Expected(link.expected_busbw_gbps, f"{link.name}: conservative busbw for {gpu_model}")
