"""Placement engine benchmark: a synthetic 100,000-host / 800,000-GPU fleet and 10,000 mixed requests.

``gpufabric_decision_latency(fleet_size, request)`` is the hook for the side-by-side with OpenStack Placement.
"""

from bench.placement.fleet import build_fleet, gpufabric_decision_latency, mixed_requests

__all__ = ["build_fleet", "gpufabric_decision_latency", "mixed_requests"]
