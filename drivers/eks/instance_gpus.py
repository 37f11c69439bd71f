"""How many GPUs of which model an EC2 instance type has: the built-in table for the GPU families, else EC2's
DescribeInstanceTypes (through the caller's lookup)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from drivers.eks.catalog import builtin_facts
from drivers.eks.nodegroups import InstanceTypeCache, InstanceTypeFacts


class TypeGpus(BaseModel):
    """The GPU side of one instance type, as the import needs it."""

    instance_type: str
    gpu_count: int
    gpu_model: str | None = None
    gpu_memory_mib: int | None = None
    efa_interfaces: int = 0
    source: Literal["ec2:DescribeInstanceTypes", "builtin"]

    @classmethod
    def of(cls, facts: InstanceTypeFacts) -> TypeGpus:
        return cls(
            instance_type=facts.instance_type,
            gpu_count=facts.gpu_count,
            gpu_model=facts.gpu_model,
            gpu_memory_mib=facts.gpu_memory_mib,
            efa_interfaces=facts.max_efa_interfaces,
            source=facts.source,
        )


def _family(instance_type: str) -> str:
    return instance_type.split(".", 1)[0].lower()


def _may_have_gpus(instance_type: str) -> bool:
    """GPU (and Gaudi) instance families start with g, p or dl; every other family has no GPU."""
    family = _family(instance_type)
    return family[:1] in ("g", "p") or family.startswith("dl")


def builtin_gpus(instance_type: str) -> TypeGpus | None:
    """From the built-in table; a non-GPU family is known to have 0 GPUs; an unlisted GPU type is unknown."""
    facts = builtin_facts(instance_type)
    if facts is not None:
        return TypeGpus.of(facts)
    if not _may_have_gpus(instance_type):
        return TypeGpus(instance_type=instance_type, gpu_count=0, source="builtin")
    return None


def lookup_gpus(
    instance_types: list[str], ec2: Any | None = None, cache: InstanceTypeCache | None = None
) -> dict[str, TypeGpus | None]:
    """GPU facts per type: from EC2 when a client is given (unknown types raise), else the built-in table."""
    if ec2 is not None:
        found = (cache or InstanceTypeCache()).facts(ec2, instance_types)
        return {name: TypeGpus.of(facts) for name, facts in found.items()}
    return {name: builtin_gpus(name) for name in dict.fromkeys(instance_types)}
