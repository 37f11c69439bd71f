"""Fleet state: storing agent inventories, desired state per host and pool."""
