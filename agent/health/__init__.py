"""GPU health: XID classification, ECC / page retirement / row remapping, bus loss, thermal, power."""

from agent.health.monitor import HealthMonitor
from agent.health.rules import HealthRules, HealthRulesError, XidClass, xid_catalog

__all__ = ["HealthMonitor", "HealthRules", "HealthRulesError", "XidClass", "xid_catalog"]
