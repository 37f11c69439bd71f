"""``python -m bench.ingest``: see :mod:`bench.ingest.run` (a module of its own so spawned load
generator processes can import their entry point)."""

from bench.ingest.run import main

if __name__ == "__main__":
    main()
