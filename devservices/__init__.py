"""Real outside services for integration tests and benchmarks, started as processes (nothing assumed running).

``devservices.openstack`` runs OpenStack Placement and Ironic from a separate virtualenv; it is stdlib-only so
the CLI (``scripts/openstack-services``) and the benchmarks can use it without the test dependencies.
"""
