"""The ``cyborg`` backend kind: Nova servers whose GPUs Cyborg attaches (``backend``), GPUs found as Cyborg's
deployables in Placement (``discovery``), Cyborg's deployables and accelerator requests compared with gpufabric's
claims (``check``)."""
