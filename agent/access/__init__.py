"""Device access per lease on agent-managed hosts: the leased device nodes open to a per-lease Unix group, nothing
else (``docs/security.md``)."""
