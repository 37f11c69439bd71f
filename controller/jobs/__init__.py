"""Background jobs (APScheduler): heartbeat sweeper and hooks for later work, run by one leader."""
