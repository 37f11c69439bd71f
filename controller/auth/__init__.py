"""Bearer tokens, roles and the principal a request acts as."""
