"""The ``fake`` backend kind: simulated hosts for the demo and tests, as Ironic ships fake-hardware."""
