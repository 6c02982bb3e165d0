"""The PostgreSQL trigger: conditions, cron ticks, claims, events and trigger runs."""

from pynenc_postgres.trigger.postgres_trigger import PostgresTrigger

__all__ = ["PostgresTrigger"]
