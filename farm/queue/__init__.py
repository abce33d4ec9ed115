"""The farm's distributed shape: Celery over Redis moves job specs to hosts
and results back; the host registry keeps facts, heartbeats, leases, health."""
