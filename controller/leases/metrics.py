"""Prometheus counters of this replica's lease service (created, refused, claim conflicts retried, released)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from controller.leases.service import LeaseService


@dataclass
class Stats:
    created: int = 0
    refused: int = 0
    conflicts_retried: int = 0
    released: int = 0


class LeaseCollector(Collector):
    def __init__(self, service: LeaseService) -> None:
        self.service = service

    def collect(self) -> Iterator[CounterMetricFamily]:
        s = self.service.stats
        for name, doc, value in (
            ("gpufabric_leases_created", "Leases claimed by this replica", s.created),
            ("gpufabric_lease_refusals", "Requests refused (no capacity or quota) by this replica", s.refused),
            (
                "gpufabric_lease_claim_conflicts_retried",
                "Claims lost to a concurrent request or replica and decided again",
                s.conflicts_retried,
            ),
            ("gpufabric_leases_released", "Leases released by this replica", s.released),
        ):
            yield CounterMetricFamily(name, doc, value=value)
