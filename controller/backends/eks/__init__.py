"""The ``eks`` backend kind: leases on EKS GPU nodegroups (``backend``), nodes and headroom as hosts (``sync``,
``headroom``), networking checks (``checks``)."""
