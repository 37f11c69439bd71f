"""The ``static`` backend kind: hosts that only run the gpufabric agent (servers you own)."""
