"""``python -m devservices.openstack``: the CLI (``scripts/openstack-services``)."""

import sys

from devservices.openstack.cli import main

sys.exit(main())
