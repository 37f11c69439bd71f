"""What the ``ironic`` and ``nova`` kinds share: config, connections, host writes, reconcile and its gauges."""
