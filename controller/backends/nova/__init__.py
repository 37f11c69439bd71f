"""The ``nova`` backend kind: one Nova server per compute host and lease (``backend``), compute nodes found through
Placement (``discovery``), Placement's usage compared with gpufabric's claims (``placement_check``)."""
