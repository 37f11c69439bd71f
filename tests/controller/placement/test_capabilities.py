"""The capability filter: what a host's backend kind cannot hand out is refused before any claim, with the reason
(Ironic nodes are leased whole; a static host attaches no vGPU), and the next candidate is taken instead."""

from __future__ import annotations

from controller.backends.eks.backend import EksBackend
from controller.backends.ironic.backend import IronicBackend
from controller.backends.nova.backend import NovaBackend
from controller.backends.static.backend import StaticBackend
from controller.placement import Decision, Engine, Host, Refusal
from tests.support.placement_fleet import gpu_host, vgpu_host


def ironic(hid: str, n: int = 8) -> Host:
    return gpu_host(hid, n=n, backend="metal", kind="ironic", whole_node=True, slice_kinds=frozenset({"gpu"}),
                    why_not="Ironic nodes are leased whole, as whole GPUs")  # fmt: skip


def test_the_backends_declare_their_capabilities() -> None:
    assert IronicBackend.capabilities.whole_node and IronicBackend.capabilities.slice_kinds == {"gpu"}
    assert "vgpu" not in StaticBackend.capabilities.slice_kinds and "vgpu" not in EksBackend.capabilities.slice_kinds
    assert NovaBackend.capabilities.one_kind_per_host and NovaBackend.capabilities.slice_kinds == {"gpu", "vgpu"}


def test_part_of_an_ironic_node_is_refused_before_any_claim_with_the_reason() -> None:
    e = Engine([ironic("metal-0")])
    r = e.decide({"slices": [{"kind": "gpu", "count": 2}]}, "t")
    assert isinstance(r, Refusal)
    cap = next(c for c in r.funnel.filters if c.name == "capability")
    assert cap.removed_hosts == 1 and "nodes are leased whole: 2 of 8 GPUs asked" in cap.examples[0]
    assert e.index.totals() == Engine([ironic("metal-0")]).index.totals()
    whole = e.decide({"slices": [{"kind": "gpu", "count": 8}]}, "t")
    assert isinstance(whole, Decision) and whole.host_ids == ["metal-0"]


def test_a_partial_request_goes_to_a_host_that_can_split_instead() -> None:
    e = Engine([ironic("metal-0"), gpu_host("static-0", n=8)])
    d = e.decide({"slices": [{"kind": "gpu", "count": 2}]}, "t")
    assert isinstance(d, Decision) and d.host_ids == ["static-0"]


def test_a_static_host_attaching_no_vgpu_is_refused_with_the_reason() -> None:
    host = vgpu_host("a16-0", slice_kinds=frozenset({"gpu", "mig", "timeslice", "mps"}),
                     why_not="vGPUs need a hypervisor backend (nova)")  # fmt: skip
    e = Engine([host])
    r = e.decide({"slices": [{"kind": "vgpu", "count": 1}]}, "t")
    assert isinstance(r, Refusal)
    cap = next(c for c in r.funnel.filters if c.name == "capability")
    assert "offer no vgpu slices: vGPUs need a hypervisor backend (nova)" in cap.examples[0]
