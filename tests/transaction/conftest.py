"""Fixtures of the ``in_transaction()`` tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pynenc_postgres.db.notify import stop_all_listeners
from tests.transaction.shop import create_business_tables


@pytest.fixture
def shop_url(database_url: str) -> Iterator[str]:
    """A migrated database with the application's tables; listeners closed afterwards."""
    create_business_tables(database_url)
    yield database_url
    stop_all_listeners()
