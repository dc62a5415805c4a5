"""The response store: known answers, durability and concurrency, each on SQLite and on a real
PostgreSQL server (the ``database`` fixture)."""

import multiprocessing
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from recommender.exceptions import RecommenderError
from recommender.store.database import Database, SchemaOutdatedError, StoreError
from recommender.store.responses import (
    CHANNELS,
    HISTORY_COLUMNS,
    OUTCOMES,
    Response,
    ResponseError,
    ResponseStore,
    ResponseStoreError,
)

T0 = datetime(2024, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def store(database: Database):
    with ResponseStore(database) as opened:
        yield opened


def test_an_sqlite_file_is_created_on_first_use_with_its_folders_in_wal_mode(
        tmp_path: Path) -> None:
    path = tmp_path / "var" / "nbo" / "responses.db"
    with ResponseStore(path) as store:
        assert store.count() == 0
    assert path.is_file()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexed = [r[2] for r in raw.execute("PRAGMA index_info(responses_by_customer_time)")]
        assert indexed == ["customer_id", "recorded_at"]
        with pytest.raises(sqlite3.IntegrityError):  # the schema itself refuses bad outcomes
            raw.execute("INSERT INTO responses (customer_id, product_id, outcome, channel, "
                        "recorded_at) VALUES ('c', 'p', 'clicked', 'email', 'x')")
    raw.close()


def test_record_returns_the_stored_row_in_utc(store: ResponseStore) -> None:
    beijing = timezone(timedelta(hours=8))
    got = store.record(" c1 ", "credit_card", "accepted", "mobile",
                       at=datetime(2024, 3, 1, 17, 30, 0, 250, tzinfo=beijing))
    assert got == Response(id=got.id, customer_id="c1", product_id="credit_card",
                           outcome="accepted", channel="mobile",
                           recorded_at=datetime(2024, 3, 1, 9, 30, 0, 250, tzinfo=UTC))
    assert got.recorded_at.utcoffset() == timedelta(0)
    assert got.to_dict() == {"id": got.id, "customer_id": "c1", "product_id": "credit_card",
                             "outcome": "accepted", "channel": "mobile",
                             "recorded_at": "2024-03-01T09:30:00.000250Z"}
    assert store.for_customer("c1") == [got]
    assert store.count() == 1


def test_record_defaults_to_now(store: ResponseStore) -> None:
    before = datetime.now(UTC)
    got = store.record("c1", "p1", "shown", "branch")
    assert before <= got.recorded_at <= datetime.now(UTC)


def test_for_customer_newest_first_and_limited(store: ResponseStore) -> None:
    middle = store.record("c1", "p_middle", "shown", "email", at=T0 + timedelta(days=1))
    oldest = store.record("c1", "p_oldest", "shown", "email", at=T0)
    half = store.record("c1", "p_half", "shown", "email", at=T0 + timedelta(microseconds=5))
    newest = store.record("c1", "p_newest", "declined", "email", at=T0 + timedelta(days=2))
    tie = store.record("c1", "p_tie", "accepted", "email", at=T0 + timedelta(days=2))
    store.record("c2", "p_other", "shown", "email", at=T0 + timedelta(days=3))
    assert store.for_customer("c1") == [tie, newest, middle, half, oldest]
    assert store.for_customer("c1", limit=2) == [tie, newest]
    assert store.for_customer("nobody") == []
    with pytest.raises(ResponseError, match="limit"):
        store.for_customer("c1", limit=-1)


GOOD = {"customer_id": "c1", "product_id": "p1", "outcome": "shown", "channel": "mobile"}


@pytest.mark.parametrize(("field", "value", "allowed"), [
    ("customer_id", "", ()),
    ("customer_id", "   ", ()),
    ("customer_id", 42, ()),
    ("product_id", "", ()),
    ("outcome", "clicked", OUTCOMES),
    ("outcome", "SHOWN", OUTCOMES),
    ("channel", "fax", CHANNELS),
    ("channel", None, CHANNELS),
])
def test_bad_field_is_refused_naming_it(store: ResponseStore, field, value, allowed) -> None:
    with pytest.raises(ResponseError, match=field) as caught:
        store.record(**{**GOOD, field: value})
    assert all(name in str(caught.value) for name in allowed)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, RecommenderError)
    assert store.count() == 0


def test_naive_or_non_datetime_time_is_refused(store: ResponseStore) -> None:
    with pytest.raises(ResponseError, match="at must be timezone-aware"):
        store.record(**GOOD, at=datetime(2024, 3, 1, 9, 30))
    with pytest.raises(ResponseError, match="at must be a datetime"):
        store.record(**GOOD, at="2024-03-01T09:30:00Z")
    assert store.count() == 0


def test_unknown_product_refused_when_the_catalog_is_given(database: Database) -> None:
    with ResponseStore(database, product_ids=["credit_card", "mortgage"]) as store:
        store.record("c1", "mortgage", "shown", "branch")
        with pytest.raises(ResponseError, match="product_id .*credit_card.*mortgage.*'yacht'"):
            store.record("c1", "yacht", "shown", "branch")
        assert [r.product_id for r in store.for_customer("c1")] == ["mortgage"]


def test_everything_survives_a_restart(database: Database, database_url: str) -> None:
    path = database_url
    store = ResponseStore(path)
    written = [store.record(f"c{i % 3}", f"p{i}", OUTCOMES[i % 3], CHANNELS[i % 4],
                            at=T0 + timedelta(minutes=i)) for i in range(12)]
    store.close()
    with pytest.raises(ResponseStoreError, match="closed"):
        store.count()
    with ResponseStore(path) as reopened:
        assert reopened.count() == 12
        for customer in ("c0", "c1", "c2"):
            expected = [r for r in reversed(written) if r.customer_id == customer]
            assert reopened.for_customer(customer) == expected
        assert reopened.record("c0", "p_new", "shown", "email").id > max(r.id for r in written)


def test_threads_sharing_one_store_lose_nothing(store: ResponseStore) -> None:
    def write(thread: int) -> list[int]:
        return [store.record(f"t{thread}", f"p{i}", "shown", "mobile").id for i in range(50)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = [i for batch in pool.map(write, range(8)) for i in batch]
    assert len(ids) == 400 and len(set(ids)) == 400
    assert store.count() == 400
    for thread in range(8):
        assert {r.product_id for r in store.for_customer(f"t{thread}")} == {
            f"p{i}" for i in range(50)}


def _record_from_another_process(path: str, worker: int) -> None:
    with ResponseStore(path) as store:
        for i in range(30):
            store.record(f"w{worker}", f"p{i}", "shown", "call_center")


def test_processes_creating_an_sqlite_file_and_writing_at_once_lose_nothing(
        tmp_path: Path) -> None:
    path = tmp_path / "shared" / "responses.db"  # not there yet: the workers race to create it
    _three_writers(str(path))


def test_processes_writing_at_once_lose_nothing(database: Database, database_url: str) -> None:
    _three_writers(database_url)


def _three_writers(path: str) -> None:
    spawn = multiprocessing.get_context("spawn")
    workers = [spawn.Process(target=_record_from_another_process, args=(str(path), w))
               for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    with ResponseStore(path) as store:
        assert store.count() == 90
        for w in range(3):
            assert len(store.for_customer(f"w{w}")) == 30


def test_contact_history_filters_by_customers_and_since(store: ResponseStore) -> None:
    store.record("a", "p1", "shown", "email", at=T0 - timedelta(seconds=1))  # before since
    on_since = store.record("a", "p2", "declined", "mobile", at=T0)
    later = store.record("a", "p3", "accepted", "branch", at=T0 + timedelta(days=1))
    b = store.record("b", "p1", "shown", "call_center", at=T0 + timedelta(hours=1))
    store.record("c", "p1", "shown", "email", at=T0 + timedelta(hours=1))  # not asked for
    history = store.contact_history(["b", "a", "nobody", "a"], since=T0)
    assert list(history.columns) == list(HISTORY_COLUMNS)
    assert str(history["recorded_at"].dtype) == "datetime64[ns, UTC]"
    expected = [(r.customer_id, r.product_id, r.outcome, r.channel, pd.Timestamp(r.recorded_at))
                for r in (on_since, later, b)]
    assert list(history.itertuples(index=False, name=None)) == expected


def test_contact_history_empty_and_bad_input(store: ResponseStore) -> None:
    empty = store.contact_history([], since=T0)
    assert empty.empty and list(empty.columns) == list(HISTORY_COLUMNS)
    assert str(empty["recorded_at"].dtype) == "datetime64[ns, UTC]"
    with pytest.raises(ResponseError, match="not one string"):
        store.contact_history("a", since=T0)
    with pytest.raises(ResponseError, match="since must be timezone-aware"):
        store.contact_history(["a"], since=datetime(2024, 3, 1))


def test_contact_history_over_many_chunks_of_ids(store: ResponseStore) -> None:
    ids = [f"c{i:05d}" for i in range(40_000)]  # above SQLite's largest variable limit too
    chosen = [ids[0], ids[899], ids[900], ids[20_000], ids[-1]]
    for customer in chosen:
        store.record(customer, "p1", "shown", "email", at=T0)
    store.record("c99999", "p1", "shown", "email", at=T0)  # a customer not asked for
    history = store.contact_history(ids, since=T0)
    assert history["customer_id"].tolist() == chosen


def test_a_file_that_is_not_a_database_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "responses.db"
    content = b"customer_id,product_id\nc1,p1\n" * 20
    path.write_bytes(content)
    with pytest.raises(StoreError, match="not a database") as caught:
        ResponseStore(path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content
    assert list(tmp_path.iterdir()) == [path]


def test_a_database_of_another_schema_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    raw = sqlite3.connect(path)
    with raw:
        raw.execute("CREATE TABLE responses (id INTEGER PRIMARY KEY, answer TEXT)")
        raw.execute("INSERT INTO responses (answer) VALUES ('yes')")
    raw.close()
    content = path.read_bytes()
    with pytest.raises(SchemaOutdatedError, match="not a database of this service") as caught:
        ResponseStore(path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == content


def test_any_since_sees_only_that_customers_recent_responses(store: ResponseStore) -> None:
    at = datetime(2024, 5, 1, 12, tzinfo=UTC)
    store.record("C1", "P1", "declined", "branch", at=at)
    store.record("C2", "P1", "shown", "mobile", at=at - timedelta(days=30))
    assert store.any_since("C1", at) and not store.any_since("C1", at + timedelta(seconds=1))
    assert store.any_since("C2", at - timedelta(days=31)) and not store.any_since("C2", at)
    assert not store.any_since("C3", at - timedelta(days=999))
    with pytest.raises(ResponseError, match="timezone-aware"):
        store.any_since("C1", datetime(2024, 5, 1))
