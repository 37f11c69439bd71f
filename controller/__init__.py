"""gpufabric controller: REST API, store, placement, leases, backends, validation, jobs, CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpufabric")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"
