"""Leases: a tenant's placed request, its state machine, its claims in the store and its provisioning.

``LeaseService`` (``service.py``) is the facade; each part of a lease's life has its own module (index, quotas,
claims, provisioning, mig_binding, release, expiry, recovery, ownership). Every claim is atomic in the store
(see ``controller.store.models.SliceClaim``).
"""
