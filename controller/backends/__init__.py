"""Backends: where hosts come from (static, ironic, nova, eks) and how each kind is configured."""
