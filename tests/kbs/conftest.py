"""Fixtures shared by the KBS tests: the real database servers (`tests.kbs.dbservers`)."""

from tests.kbs.dbservers import postgres_server, postgres_url, redis_server, redis_url

__all__ = ["postgres_server", "postgres_url", "redis_server", "redis_url"]
