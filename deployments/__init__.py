"""Work-pool, worker and schedule helpers (the deployment work, issue #5, fills this in)."""
