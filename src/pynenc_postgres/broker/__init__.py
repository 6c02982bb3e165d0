"""PostgresBroker: pynenc's broker queues in PostgreSQL."""

from pynenc_postgres.broker.postgres_broker import PostgresBroker

__all__ = ["PostgresBroker"]
