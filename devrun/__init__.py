"""``make run``'s supervisor (``python -m devrun``): embedded PostgreSQL and Redis, the
Procfile's processes through honcho, and the recovery of what a killed run left behind.
A developer tool, outside the product's packages."""
