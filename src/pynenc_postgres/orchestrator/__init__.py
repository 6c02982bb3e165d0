"""PostgresOrchestrator: invocation status, blocking control, heartbeats, atomic service."""

from pynenc_postgres.orchestrator.postgres_orchestrator import PostgresOrchestrator

__all__ = ["PostgresOrchestrator"]
