"""Hosts whose capacity ends (an EC2 Capacity Block): a lease must end before it (filter ``capacity-window``), and
the grouped refusal funnel still equals the exhaustive walk with such hosts and durations in the mix."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from controller.placement import Decision, Engine, Refusal
from tests.controller.placement.test_funnel_equivalence import assert_same_funnel, quota, random_host, random_request
from tests.support.placement_fleet import gpu_host

WHOLE = {"slices": [{"kind": "gpu", "count": 8}], "topology": "same-host"}


def _fleet(block_end: datetime) -> list:
    return [
        gpu_host("block-0", backend="eks-train", kind="eks", usable_until=block_end),
        gpu_host("block-1", backend="eks-train", kind="eks", usable_until=block_end),
        gpu_host("od-0", backend="eks-train", kind="eks"),
    ]


def _window(r: Refusal) -> list[str]:
    entry = next(c for c in r.funnel.filters if c.name == "capacity-window")
    assert entry.removed_hosts == 2, r.funnel
    return entry.examples


def test_a_lease_on_a_capacity_block_must_end_before_it() -> None:
    end = datetime.now(UTC) + timedelta(hours=24)
    e = Engine(_fleet(end))
    short = e.decide({**WHOLE, "duration": 4 * 3600, "policy": "spread"}, "t")
    assert isinstance(short, Decision)
    long = e.decide({**WHOLE, "duration": 3 * 24 * 3600}, "t")
    assert isinstance(long, Decision) and long.host_ids == ["od-0"]  # only the host without an end fits
    gang = e.decide({**WHOLE, "topology": "any", "nodes": 2, "duration": 3 * 24 * 3600}, "t")
    assert isinstance(gang, Refusal)
    (example, *_) = _window(gang)
    assert f"ends {end:%Y-%m-%d %H:%M} UTC: a lease of 72.0 h would end after it" in example
    open_ended = e.decide({**WHOLE, "topology": "any", "nodes": 3}, "t")
    assert isinstance(open_ended, Refusal)
    assert "needs a duration that ends before then" in _window(open_ended)[0]
    assert isinstance(e.decide({**WHOLE, "topology": "any", "nodes": 3, "duration": 3600}, "t"), Decision)


@pytest.mark.parametrize("seed", range(6))
def test_grouped_funnel_equals_exhaustive_with_capacity_windows(seed: int) -> None:
    rng = random.Random(1000 + seed)
    now = datetime.now(UTC)
    ends = [None, None, now + timedelta(hours=6), now + timedelta(days=2)]
    hosts = [random_host(rng, i) for i in range(rng.choice([20, 80, 150]))]
    for h in hosts:
        h.usable_until = rng.choice(ends)
    e = Engine(hosts, quota=quota)
    for _ in range(30):
        body = random_request(rng)
        if rng.random() < 0.7:
            body["duration"] = rng.choice([3600, 12 * 3600, 3 * 24 * 3600])
        assert_same_funnel(e, body, rng.choice(["t", "capped"]))
