"""Campaign and target lists on a real Spark equal the local engine's, customer for customer:
the same customers, products, ranks and order, numbers within the project's tolerance
(``tests/tolerance.py``); the same named error for a bad extract; and the same list when an
executor fails once and Spark retries its task."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from pyspark import cloudpickle

from recommender.campaign.run import run_campaign
from recommender.campaign.spec import CampaignSpec
from recommender.campaign.target_list import top_customers
from recommender.cli import main
from recommender.data.book import months_read
from recommender.data.partition import open_customers
from recommender.exceptions import DataValidationError
from recommender.service import open_decision_log
from recommender.spark.campaign import run_campaign_spark, top_customers_spark
from recommender.spark.extracts import ExtractLocations, open_bank
from recommender.spark.session import ship_model
from recommender.store.replay import replay, unpacked
from recommender.store.responses import ResponseStore

from tolerance import assert_same_frame

# The executors unpickle this module's callables (the failure below) by value: they cannot
# import the tests.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

# pyspark leaves sockets to the JVM for the garbage collector to close
pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

PRODUCTS = ("credit_card", "wmp_conservative", "time_deposit", "mortgage", "pension_account")


def _spec(**change) -> CampaignSpec:
    values = {"name": "spring", "channel": "mobile", "products": PRODUCTS,
              "quotas": dict(zip(PRODUCTS, (300, 250, 200, 40, 150), strict=True)),
              "max_offers_per_customer": 2, "min_propensity": 0.001,
              "contact_window_days": 30, "exclude_life_stages": ("student",)}
    return CampaignSpec(**{**values, **change})


def _on_spark(spark, data, models, engine, part_size=600):
    shipped = ship_model(spark, models, engine.model.version, engine.policy)
    bank = open_bank(spark, ExtractLocations.of(str(data)), engine.catalog,
                     months_read(engine.model), part_size)
    return shipped, bank


def _local_campaign(data, engine, spec, responses=None, decisions=None) -> pd.DataFrame:
    with open_customers(data, engine.model) as customers:
        return run_campaign(engine, customers, spec, responses, progress=None,
                            decisions=decisions)


def _responses(path: Path, data: Path) -> ResponseStore:
    """Declines and shows of some customers in the last weeks: the contact policy and the
    campaign's window leave them out alike."""
    store = ResponseStore(path)
    ids = pd.read_parquet(data / "customers.parquet")["customer_id"].head(400).tolist()
    now = datetime.now(UTC)
    for i, customer_id in enumerate(ids):
        outcome = ("declined", "shown", "accepted")[i % 3]
        store.record(customer_id, PRODUCTS[i % len(PRODUCTS)], outcome, "mobile",
                     at=now - timedelta(days=i % 50))
    return store


@pytest.mark.numerics
def test_spark_campaign_equals_local_and_logs_decisions_replay_reads(spark, demo_bank,
                                                                     tmp_path):
    data, models, engine = demo_bank
    responses = _responses(tmp_path / "nbo.db", data)
    with open_decision_log(tmp_path / "local") as log:
        local = _local_campaign(data, engine, _spec(), responses, log)
    shipped, bank = _on_spark(spark, data, models, engine)
    assert bank.parts == 5  # 2,500 customers in parts of 600
    with open_decision_log(tmp_path / "spark") as log:
        remote = run_campaign_spark(spark, engine, shipped, bank, _spec(), responses,
                                    decisions=log)
        assert len(local) > 500 and remote["customer_id"].nunique() > 300
        assert_same_frame(remote.drop(columns="decision_id"),
                          local.drop(columns="decision_id"))
        assert log.count() == remote["customer_id"].nunique()
        for decision_id in remote["decision_id"].drop_duplicates().head(10):
            decision = unpacked(log.get(decision_id))
            assert decision.source == "batch"
            assert replay(decision, models).same
    # The responses shaped the list: without them, other customers get the places.
    without = _local_campaign(data, engine, _spec())
    assert set(without["customer_id"]) != set(local["customer_id"])


def test_spark_target_lists_equal_local(spark, demo_bank):
    data, models, engine = demo_bank
    shipped, bank = _on_spark(spark, data, models, engine)
    with open_customers(data, engine.model) as customers:
        top = top_customers(engine, customers, "credit_card", 150, progress=None)
        every = top_customers(engine, customers, "wmp_conservative", None, "branch",
                              progress=None)
    assert_same_frame(top_customers_spark(engine, shipped, bank, "credit_card", 150), top)
    assert_same_frame(top_customers_spark(engine, shipped, bank, "wmp_conservative", None,
                                          "branch"), every)
    assert len(every) > 150


def test_interval_bank_of_ids_only_gives_the_same_lists(spark, interval_bank):
    data, models, engine = interval_bank
    shipped, bank = _on_spark(spark, data, models, engine, part_size=400)
    assert bank.intervals
    spec = _spec(exclude_life_stages=())
    assert_same_frame(run_campaign_spark(spark, engine, shipped, bank, spec),
                      _local_campaign(data, engine, spec))
    with open_customers(data, engine.model) as customers:
        local = top_customers(engine, customers, "time_deposit", 200, progress=None)
    assert_same_frame(top_customers_spark(engine, shipped, bank, "time_deposit", 200), local)


class FailOnce:
    """Raises in the executor the first time any part is scored (a marker file remembers),
    as a lost executor or a failing disk would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __call__(self, part: int) -> None:
        if not self.marker.exists():
            self.marker.write_text(str(part), encoding="utf-8")
            raise RuntimeError(f"injected failure in part {part}")


def test_a_task_that_fails_once_is_retried_and_the_list_is_exact(spark, demo_bank, tmp_path):
    data, models, engine = demo_bank
    shipped, bank = _on_spark(spark, data, models, engine)
    marker = tmp_path / "failed-once"
    remote = run_campaign_spark(spark, engine, shipped, bank, _spec(),
                                before_part=FailOnce(marker))
    assert marker.exists()  # a task did fail, and Spark ran it again
    assert_same_frame(remote, _local_campaign(data, engine, _spec()))
    marker.unlink()
    assert_same_frame(top_customers_spark(engine, shipped, bank, "mortgage", 80,
                                          before_part=FailOnce(marker)),
                      _local_top(data, engine, "mortgage", 80))
    assert marker.exists()


def _local_top(data, engine, product, n):
    with open_customers(data, engine.model) as customers:
        return top_customers(engine, customers, product, n, progress=None)


def _bad_copy(data: Path, out: Path, customers=None, holdings=None) -> Path:
    out.mkdir()
    for name in ("customers", "holdings", "customer_features"):
        frame = pd.read_parquet(data / f"{name}.parquet")
        change = {"customers": customers, "holdings": holdings}.get(name)
        (change(frame) if change else frame).to_parquet(out / f"{name}.parquet", index=False)
    return out


def _outcome(run):
    """What ``run()`` returns, or the named error it raises."""
    try:
        return run()
    except DataValidationError as exc:
        return exc


@pytest.mark.parametrize("bad", ["duplicate_customer", "bad_income", "unknown_holder",
                                 "no_customer_id", "bad_snapshot_date"])
def test_a_bad_extract_gives_the_same_named_error(spark, demo_bank, tmp_path, bad):
    data, models, engine = demo_bank

    def unknown_holder(h):
        h = h.astype({"customer_id": str})
        h.loc[h.index[5], "customer_id"] = "C-NOBODY"
        return h

    def duplicate_customer(c):
        return pd.concat([c, c.iloc[[3]]], ignore_index=True)

    def bad_income(c):
        c = c.astype({"income": str})
        c.loc[c.index[8], "income"] = "lots"
        return c

    def bad_snapshot_date(h):
        h = h.astype({"snapshot_date": str})
        h.loc[h.index[2], "snapshot_date"] = "last month"
        return h

    changes = {"unknown_holder": {"holdings": unknown_holder},
               "duplicate_customer": {"customers": duplicate_customer},
               "bad_income": {"customers": bad_income},
               "no_customer_id": {"customers": lambda c: c.rename(
                   columns={"customer_id": "client"})},
               "bad_snapshot_date": {"holdings": bad_snapshot_date}}[bad]
    copy = _bad_copy(data, tmp_path / "bad", **changes)
    local = _outcome(lambda: _local_campaign(copy, engine, _spec()))
    remote = _outcome(lambda: run_campaign_spark(spark, engine, *_on_spark(
        spark, copy, models, engine), _spec()))
    if bad == "unknown_holder":  # rows of customers the bank does not list are left out
        assert_same_frame(remote, local)
        return
    assert isinstance(local, DataValidationError), bad
    assert type(remote) is type(local)
    assert (remote.reason, remote.column) == (local.reason, local.column)
    assert Path(remote.source.split()[0]).name == Path(local.source.split()[0]).name


def test_cli_engine_spark_writes_the_list_as_a_dataset(spark, demo_bank, tmp_path):
    data, models, _ = demo_bank
    spec = Path(__file__).resolve().parents[2] / "examples" / "campaign.toml"
    common = ["campaign", "--data", str(data), "--models", str(models), "--state",
              str(tmp_path / "state"), "--report", str(tmp_path / "report")]
    assert main([*common, "--spec", str(spec), "--out", str(tmp_path / "local.parquet")]) == 0
    out = tmp_path / "lists" / "spring.parquet"
    for _ in range(2):  # a second run replaces the first list whole
        assert main([*common, "--spec", str(spec), "--engine", "spark", "--out", str(out)]) == 0
    assert out.is_dir() and (out / "_SUCCESS").exists()
    assert not list(out.parent.glob("*.partial-*"))
    local = pd.read_parquet(tmp_path / "local.parquet").drop(columns="decision_id")
    remote = pd.read_parquet(out).drop(columns="decision_id")
    assert_same_frame(remote, local)
    csv = tmp_path / "target.csv"
    assert main([*common, "--for-product", "credit_card", "--top", "50", "--engine", "spark",
                 "--out", str(csv)]) == 0
    frame = pd.concat(pd.read_csv(p) for p in sorted(csv.glob("part-*.csv")))
    assert len(frame) == 50 and frame["rank"].tolist() == list(range(1, 51))


def test_a_campaign_that_reaches_nobody_and_a_product_nobody_may_get(spark, demo_bank, tmp_path):
    """Empty lists are lists too: the same empty campaign (decision log open), and the same
    explanation of why a target list is empty."""
    from recommender.exceptions import InsufficientDataError

    data, models, engine = demo_bank
    shipped, bank = _on_spark(spark, data, models, engine)
    spec = _spec(min_propensity=0.999)
    with open_decision_log(tmp_path / "spark") as log:
        remote = run_campaign_spark(spark, engine, shipped, bank, spec, decisions=log)
        assert log.count() == 0
    with open_decision_log(tmp_path / "local") as log:
        local = _local_campaign(data, engine, spec, decisions=log)
    assert len(local) == 0
    assert_same_frame(remote, local)
    with pytest.raises(InsufficientDataError) as on_spark:
        top_customers_spark(engine, shipped, bank, "current_account", 10)
    with pytest.raises(InsufficientDataError) as alone:
        _local_top(data, engine, "current_account", 10)
    assert str(on_spark.value) == str(alone.value)


@pytest.mark.parametrize("kind", ["timestamp_ms", "date"])
def test_snapshot_dates_of_any_type_in_any_time_zone(spark, demo_bank, tmp_path, monkeypatch,
                                                    kind):
    """A bank in Shanghai whose snapshot dates are timestamps or dates, not pandas'
    nanoseconds: the months kept are the local engine's, and so is the list."""
    import time

    import pyarrow as pa
    import pyarrow.parquet as pq

    data, models, engine = demo_bank
    monkeypatch.setenv("TZ", "Asia/Shanghai")
    time.tzset()
    try:
        copy = tmp_path / "bank"
        copy.mkdir()
        for name in ("customers", "customer_features"):
            pd.read_parquet(data / f"{name}.parquet").to_parquet(copy / f"{name}.parquet")
        table = pq.read_table(data / "holdings.parquet")
        at = table.schema.get_field_index("snapshot_date")
        to = pa.timestamp("ms") if kind == "timestamp_ms" else pa.date32()
        pq.write_table(table.set_column(at, "snapshot_date", table.column(at).cast(to)),
                       copy / "holdings.parquet")
        shipped, bank = _on_spark(spark, copy, models, engine)
        holdings = pd.read_parquet(data / "holdings.parquet")
        months = sorted(holdings["snapshot_date"].unique())[-engine.model.config.acquisition
                                                             .n_lags:]
        kept = bank.events.where("_table = 'holdings'").count()  # the time-varying rows aside
        assert kept == int(holdings["snapshot_date"].isin(months).sum())
        assert_same_frame(run_campaign_spark(spark, engine, shipped, bank, _spec()),
                          _local_campaign(copy, engine, _spec()))
    finally:
        monkeypatch.undo()
        time.tzset()
