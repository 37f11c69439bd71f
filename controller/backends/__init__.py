"""Backends: where hosts come from and how leases are provisioned on them, one package per kind (``static``,
``ironic``, ``nova``, ``eks``; ``openstack`` holds what ironic and nova share). ``contract`` is what every kind
implements, ``registry`` builds an app's kinds at start-up. Importing any of them registers nothing."""
