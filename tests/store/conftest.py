"""Store tests run on each backend: ``database`` is an upgraded database on SQLite, then on a
real PostgreSQL server (``database_url`` in tests/conftest.py)."""

import pytest

from recommender.store.database import Database


@pytest.fixture
def database(database_url: str):
    """A database at this code's schema, on the backend of the test's parameter."""
    opened = Database(database_url)
    opened.upgrade()
    yield opened
    opened.dispose()

