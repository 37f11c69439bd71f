"""gpufabric node agent: GPU discovery, MIG and sharing, health, reporting."""

__version__ = "0.1.0"
