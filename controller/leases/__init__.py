"""Leases: a tenant's placed request, its state machine, its claims in the store and its provisioning.

``LeaseService`` owns this replica's placement engine (built from the store, kept current on every write)
and makes every claim atomic in the store (see ``controller.store.models.SliceClaim``).
"""
