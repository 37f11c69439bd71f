"""The ``ironic`` backend kind: whole bare-metal GPU nodes deployed per lease (``backend``), found by ``discovery``."""
