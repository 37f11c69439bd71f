"""A small built-in table of common GPU instance types, for imports made without AWS access.

Source: the EC2 ``DescribeInstanceTypes`` records for these types as shipped in moto 5.2.5's bundled
instance-type data (a copy of the AWS API's answers), read on 2026-11-22. Only the g4dn, g5, g6, g6e,
p4d, p4de, p5, p5e and p5en families are listed, every size found there. When an EC2 client is at hand
its answer wins: AWS adds sizes and changes network figures, and this table does not follow.
"""

from __future__ import annotations

from drivers.eks.nodegroups import InstanceTypeFacts, parse_network_gbps

# type: (gpu, count, MiB per GPU, efa supported, max EFA interfaces, network performance, max ENIs,
#        IPv4 per ENI, vCPUs, memory MiB, network cards)
_ROWS: dict[str, tuple[str, int, int, bool, int, str, int, int, int, int, int]] = {
    "g4dn.xlarge": ("T4", 1, 16384, False, 0, "Up to 25 Gigabit", 3, 10, 4, 16384, 1),
    "g4dn.2xlarge": ("T4", 1, 16384, False, 0, "Up to 25 Gigabit", 3, 10, 8, 32768, 1),
    "g4dn.4xlarge": ("T4", 1, 16384, False, 0, "Up to 25 Gigabit", 3, 10, 16, 65536, 1),
    "g4dn.8xlarge": ("T4", 1, 16384, True, 1, "50 Gigabit", 4, 15, 32, 131072, 1),
    "g4dn.12xlarge": ("T4", 4, 16384, True, 1, "50 Gigabit", 8, 30, 48, 196608, 1),
    "g4dn.16xlarge": ("T4", 1, 16384, True, 1, "50 Gigabit", 4, 15, 64, 262144, 1),
    "g4dn.metal": ("T4", 8, 16384, True, 1, "100 Gigabit", 15, 50, 96, 393216, 1),
    "g5.xlarge": ("A10G", 1, 22888, False, 0, "Up to 10 Gigabit", 4, 15, 4, 16384, 1),
    "g5.2xlarge": ("A10G", 1, 22888, False, 0, "Up to 10 Gigabit", 4, 15, 8, 32768, 1),
    "g5.4xlarge": ("A10G", 1, 22888, False, 0, "Up to 25 Gigabit", 8, 30, 16, 65536, 1),
    "g5.8xlarge": ("A10G", 1, 22888, True, 1, "25 Gigabit", 8, 30, 32, 131072, 1),
    "g5.12xlarge": ("A10G", 4, 22888, True, 1, "40 Gigabit", 15, 50, 48, 196608, 1),
    "g5.16xlarge": ("A10G", 1, 22888, True, 1, "25 Gigabit", 8, 30, 64, 262144, 1),
    "g5.24xlarge": ("A10G", 4, 22888, True, 1, "50 Gigabit", 15, 50, 96, 393216, 1),
    "g5.48xlarge": ("A10G", 8, 22888, True, 1, "100 Gigabit", 7, 50, 192, 786432, 1),
    "g6.xlarge": ("L4", 1, 22888, False, 0, "Up to 10 Gigabit", 4, 15, 4, 16384, 1),
    "g6.2xlarge": ("L4", 1, 22888, False, 0, "Up to 10 Gigabit", 4, 15, 8, 32768, 1),
    "g6.4xlarge": ("L4", 1, 22888, False, 0, "Up to 25 Gigabit", 8, 30, 16, 65536, 1),
    "g6.8xlarge": ("L4", 1, 22888, True, 1, "25 Gigabit", 8, 30, 32, 131072, 1),
    "g6.12xlarge": ("L4", 4, 22888, True, 1, "40 Gigabit", 8, 30, 48, 196608, 1),
    "g6.16xlarge": ("L4", 1, 22888, True, 1, "25 Gigabit", 15, 50, 64, 262144, 1),
    "g6.24xlarge": ("L4", 4, 22888, True, 1, "50 Gigabit", 15, 50, 96, 393216, 1),
    "g6.48xlarge": ("L4", 8, 22888, True, 1, "100 Gigabit", 15, 50, 192, 786432, 1),
    "g6e.xlarge": ("L40S", 1, 45776, False, 0, "Up to 20 Gigabit", 4, 15, 4, 32768, 1),
    "g6e.2xlarge": ("L40S", 1, 45776, False, 0, "Up to 20 Gigabit", 4, 15, 8, 65536, 1),
    "g6e.4xlarge": ("L40S", 1, 45776, False, 0, "20 Gigabit", 8, 30, 16, 131072, 1),
    "g6e.8xlarge": ("L40S", 1, 45776, True, 1, "25 Gigabit", 8, 30, 32, 262144, 1),
    "g6e.12xlarge": ("L40S", 4, 45776, True, 1, "100 Gigabit", 10, 30, 48, 393216, 1),
    "g6e.16xlarge": ("L40S", 1, 45776, True, 1, "35 Gigabit", 15, 50, 64, 524288, 1),
    "g6e.24xlarge": ("L40S", 4, 45776, True, 2, "200 Gigabit", 20, 50, 96, 786432, 2),
    "g6e.48xlarge": ("L40S", 8, 45776, True, 4, "400 Gigabit", 40, 50, 192, 1572864, 4),
    "p4d.24xlarge": ("A100", 8, 40960, True, 4, "4x 100 Gigabit", 60, 50, 96, 1179648, 4),
    "p4de.24xlarge": ("A100", 8, 81920, True, 4, "4x 100 Gigabit", 60, 50, 96, 1179648, 4),
    "p5.4xlarge": ("H100", 1, 81920, True, 1, "100 Gigabit", 4, 30, 16, 262144, 1),
    "p5.48xlarge": ("H100", 8, 81920, True, 32, "3200 Gigabit", 64, 50, 192, 2097152, 32),
    "p5e.48xlarge": ("H200", 8, 144384, True, 32, "3200 Gigabit", 64, 50, 192, 2097152, 32),
    "p5en.48xlarge": ("H200", 8, 144384, True, 16, "3200 Gigabit", 64, 50, 192, 2097152, 16),
}


def builtin_facts(instance_type: str) -> InstanceTypeFacts | None:
    """Facts from the built-in table, or None for a type it does not list."""
    row = _ROWS.get(instance_type)
    if row is None:
        return None
    gpu, count, mem, efa, efa_max, perf, enis, ipv4, vcpus, memory, cards = row
    return InstanceTypeFacts(
        instance_type=instance_type,
        vcpus=vcpus,
        memory_mib=memory,
        gpu_model=gpu,
        gpu_manufacturer="NVIDIA",
        gpu_count=count,
        gpu_memory_mib=mem,
        efa_supported=efa,
        max_efa_interfaces=efa_max,
        network_performance=perf,
        network_gbps=parse_network_gbps(perf),
        network_cards=cards,
        max_enis=enis,
        ipv4_per_eni=ipv4,
        source="builtin",
    )


def builtin_instance_types() -> list[str]:
    return sorted(_ROWS)
