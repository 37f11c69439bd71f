"""NCCL validation: run nccl-tests on hosts (agents) or EKS nodegroups (MPIJob), judge, gate placement.

``service`` creates and reconciles validations, ``verdict`` judges a parsed log against the expected
bandwidth (``expected``), ``gate`` keeps each host's validation state (validated / quarantined / held
for burn-in) that placement reads, ``jobs`` registers the periodic work (reconcile, cron schedules,
burn-in) on the job scheduler's hook registry and ``api`` is the REST surface under ``/v1/validations``.
"""
