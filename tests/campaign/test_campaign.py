"""Campaign lists: quotas, per-customer limits, the same decisions as the API, and the
greedy assignment against the exact optimum."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linprog

from recommender.campaign.assignment import greedy_assign
from recommender.campaign.output import summary, write_list, write_summary
from recommender.campaign.run import OUTPUT_COLUMNS, run_campaign
from recommender.campaign.spec import CampaignSpec
from recommender.campaign.target_list import top_customers
from recommender.cli import main
from recommender.exceptions import ConfigError
from recommender.policy.offers import OfferEngine
from recommender.policy.rules import DecisionContext

from tolerance import assert_close, assert_same_frame

pytestmark = pytest.mark.numerics  # compares numbers two code paths compute

PRODUCTS = ("wmp_conservative", "bond_fund", "time_deposit", "mobile_banking")


def _exact_optimum(customers, products, values, quotas, per_customer) -> float:
    """Maximum total value: an LP whose bipartite constraint matrix makes it integral."""
    n = len(values)
    rows, bounds = [], []
    for c in np.unique(customers):
        rows.append((customers == c).astype(float))
        bounds.append(per_customer)
    for p, q in quotas.items():
        rows.append((products == p).astype(float))
        bounds.append(q)
    res = linprog(-values, A_ub=np.array(rows), b_ub=np.array(bounds), bounds=[(0, 1)] * n,
                  method="highs")
    assert res.status == 0
    return -res.fun


@pytest.mark.parametrize("seed", range(25))
def test_greedy_is_close_to_the_exact_optimum(seed):
    """Measured gap on random small problems: the greedy reaches at least 90% of the optimum
    here (theory guarantees 50%); it is exact when customers are not the binding limit."""
    rng = np.random.default_rng(seed)
    n_customers, n_products = 30, 4
    pairs = [(c, p) for c in range(n_customers) for p in range(n_products) if rng.random() < 0.6]
    customers = np.array([c for c, _ in pairs])
    products = np.array([p for _, p in pairs])
    values = rng.gamma(2.0, 1.0, len(pairs))
    quotas = {p: int(rng.integers(3, 12)) for p in range(n_products)}
    chosen = greedy_assign(customers, products, values, quotas, per_customer=1)
    greedy, exact = values[chosen].sum(), _exact_optimum(customers, products, values, quotas, 1)
    assert greedy <= exact + 1e-9
    assert greedy >= 0.9 * exact, (greedy, exact)
    loose = greedy_assign(customers, products, values, quotas, per_customer=n_products)
    assert values[loose].sum() == pytest.approx(
        _exact_optimum(customers, products, values, quotas, n_products))


def test_greedy_respects_both_limits_and_breaks_ties_by_ids():
    customers = np.array([0, 0, 1, 1, 2])
    products = np.array([0, 1, 0, 1, 0])
    values = np.array([5.0, 4.0, 5.0, 3.0, 1.0])
    chosen = greedy_assign(customers, products, values, {0: 1, 1: 2}, per_customer=1)
    assert sorted(chosen.tolist()) == [0, 3]  # customer 0 wins the tie for product 0


def _spec(**changes) -> CampaignSpec:
    values = {"name": "test", "channel": "branch", "products": PRODUCTS,
              "quotas": {"wmp_conservative": 60, "bond_fund": 40, "time_deposit": 50,
                         "mobile_banking": 80},
              "max_offers_per_customer": 1}
    return CampaignSpec(**{**values, **changes})


def test_quotas_and_offers_per_customer_are_respected(bank_and_engine):
    _, engine, book = bank_and_engine
    for per_customer in (1, 2):
        frame = run_campaign(engine, book, _spec(max_offers_per_customer=per_customer),
                             progress=None)
        assert list(frame.columns) == list(OUTPUT_COLUMNS)
        counts = frame["product_id"].value_counts()
        for product, quota in _spec().quotas.items():
            assert counts.get(product, 0) <= quota
        assert frame.groupby("customer_id").size().max() <= per_customer
        assert (frame["expected_value"] > 0).all()
        assert frame.groupby("customer_id")["rank"].apply(
            lambda r: list(r) == list(range(1, len(r) + 1))).all()


def test_small_chunks_give_the_same_list(bank_and_engine):
    """Pruning per chunk keeps every pair the greedy would take."""
    _, engine, book = bank_and_engine
    whole = run_campaign(engine, book, _spec(), chunk_size=10_000, progress=None)
    chunked = run_campaign(engine, book, _spec(), chunk_size=97, progress=None)
    assert_same_frame(whole, chunked)


def test_campaign_rows_equal_the_single_customer_decision(bank_and_engine):
    """Each row's propensity and priority are the API engine's for that customer."""
    _, engine, book = bank_and_engine
    frame = run_campaign(engine, book, _spec(), progress=None)
    context = DecisionContext(channel="branch")
    sample = frame.sample(40, random_state=0)
    for row in sample.itertuples():
        batch = book.batch(np.array([book.position(row.customer_id)]))
        # Every product's figures, not the few the answer shows: a quota can give a
        # customer a product below their first five.
        scored = engine.score(batch, 20, context)
        pos = engine.catalog.ids.position(row.product_id)
        assert np.isfinite(scored.priority[0, pos]), (row.customer_id, row.product_id)
        assert_close(scored.propensity[0, pos], row.propensity)
        assert_close(scored.priority[0, pos], row.priority)


def test_exclusions_and_minimum_propensity(bank_and_engine, tmp_path):
    _, engine, book = bank_and_engine
    base = run_campaign(engine, book, _spec(), progress=None)
    stage_ids = book.stages.ids.to_external(book.stage_codes)
    retired = set(book.ids.to_external(np.flatnonzero(stage_ids == "retired")))
    no_retired = run_campaign(engine, book, _spec(exclude_life_stages=("retired",)),
                              progress=None)
    assert not set(no_retired["customer_id"]) & retired
    blocked = base["customer_id"].head(10)
    pd.DataFrame({"customer_id": blocked}).to_csv(tmp_path / "dnc.csv", index=False)
    without = run_campaign(engine, book, _spec(exclude_customers=str(tmp_path / "dnc.csv")),
                           progress=None)
    assert not set(without["customer_id"]) & set(blocked)
    threshold = float(base["propensity"].median())
    high = run_campaign(engine, book, _spec(min_propensity=threshold), progress=None)
    assert (high["propensity"] >= threshold).all()


@pytest.mark.parametrize(("change", "message"), [
    ({"channel": "fax"}, "channel"),
    ({"products": ("nope",), "quotas": {"nope": 1}}, "not in the catalog"),
    ({"quotas": {"bond_fund": 1}}, "quotas"),
    ({"max_offers_per_customer": 0}, "max_offers_per_customer"),
    ({"exclude_life_stages": ("astronaut",)}, "unknown stages"),
    ({"intent": "holiday"}, "intent"),
])
def test_bad_specs_are_refused(bank_and_engine, change, message):
    _, engine, book = bank_and_engine
    with pytest.raises(ConfigError, match=message):
        run_campaign(engine, book, _spec(**change), progress=None)


def test_spec_file_with_unknown_keys_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('name = "x"\nchannel = "branch"\nproducts = []\n[quotas]\n'
                    'budget = 3\n[extra]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown keys"):
        CampaignSpec.from_toml(path)


def test_outputs_and_summary(bank_and_engine, tmp_path):
    _, engine, book = bank_and_engine
    frame = run_campaign(engine, book, _spec(), progress=None)
    for name in ("list.parquet", "list.csv"):
        written = write_list(frame, tmp_path / name)
        back = pd.read_parquet(written) if name.endswith("parquet") else pd.read_csv(
            written, dtype={"customer_id": str})
        assert back["customer_id"].tolist() == frame["customer_id"].tolist()
    with pytest.raises(ConfigError, match="parquet or .csv"):
        write_list(frame, tmp_path / "list.xlsx")
    result = summary(frame, len(book), _spec())
    assert result["offers"] == len(frame)
    assert sum(result["per_life_stage"].values()) == len(frame)
    report = write_summary(result, tmp_path / "report")
    assert "| bond_fund |" in report.read_text(encoding="utf-8")
    assert (tmp_path / "report" / "offers_per_product.png").stat().st_size > 1000


def test_nbo_campaign_command(bank_and_engine, tmp_path, capsys):
    root, _, _ = bank_and_engine
    spec = tmp_path / "c.toml"
    spec.write_text('name = "cli"\nchannel = "mobile"\nproducts = ["bond_fund"]\n'
                    'max_offers_per_customer = 1\n[quotas]\nbond_fund = 30\n', encoding="utf-8")
    out = tmp_path / "out.csv"
    assert main(["campaign", "--spec", str(spec), "--out", str(out), "--report",
                 str(tmp_path / "r"), "--data", str(root / "data"), "--models",
                 str(root / "models"), "--state", str(tmp_path / "state")]) == 0
    assert 0 < len(pd.read_csv(out)) <= 30
    assert "offers to" in capsys.readouterr().out
    target = tmp_path / "target.parquet"
    assert main(["campaign", "--for-product", "bond_fund", "--top", "10", "--out", str(target),
                 "--data", str(root / "data"), "--models", str(root / "models")]) == 0
    assert len(pd.read_parquet(target)) == 10


def test_campaign_decisions_are_logged_and_replay_the_same(bank_and_engine, tmp_path):
    """Every customer reached gets a logged batch decision; replaying it recomputes the same
    propensity, priority and expected value for the offers the campaign made."""
    from recommender.service import open_decision_log
    from recommender.store.replay import replay, unpacked

    root, engine, book = bank_and_engine
    with open_decision_log(tmp_path / "state") as log:
        frame = run_campaign(engine, book, _spec(max_offers_per_customer=2), progress=None,
                             decisions=log)
        assert frame["decision_id"].notna().all()
        assert frame.groupby("customer_id")["decision_id"].nunique().eq(1).all()
        assert log.count() == frame["customer_id"].nunique()
        for decision_id in frame["decision_id"].drop_duplicates().head(15):
            decision = unpacked(log.get(decision_id))
            assert decision.source == "batch"
            rows = frame[frame["decision_id"] == decision_id]
            assert [o["product_id"] for o in decision.output["offers"]] == rows[
                "product_id"].tolist()
            assert replay(decision, root / "models").same
        tampered = unpacked(log.get(frame["decision_id"].iloc[0]))
        tampered.output["offers"][0]["priority"] *= 2
        assert not replay(tampered, root / "models").same


def test_a_campaign_over_the_bank_in_parts_equals_one_over_the_whole_book(bank_and_engine):
    """Parts bound memory; they must not change a single row of the list."""
    from recommender.data.partition import open_customers

    root, engine, book = bank_and_engine
    whole = run_campaign(engine, book, _spec(max_offers_per_customer=2), progress=None)
    with open_customers(root / "data", engine.model, part_size=700) as parted:
        assert parted.bank.parts == 5 and len(parted) == len(book)
        in_parts = run_campaign(engine, parted, _spec(max_offers_per_customer=2), chunk_size=300,
                                progress=None)
        top = top_customers(engine, parted, "bond_fund", 25, progress=None)
    assert_same_frame(in_parts, whole)
    assert_same_frame(top, top_customers(engine, book, "bond_fund", 25,
                                                     progress=None))


def test_parts_hold_each_customer_once_with_all_their_recent_holdings(bank_and_engine, tmp_path):
    from recommender.data.partition import split_bank

    root, engine, book = bank_and_engine
    customers = pd.read_parquet(root / "data" / "customers.parquet")
    holdings = pd.read_parquet(root / "data" / "holdings.parquet")
    for name, frame in (("customers", customers), ("holdings", holdings)):  # CSV reads alike
        frame.astype(str).to_csv(tmp_path / f"{name}.csv", index=False)
    latest = sorted(holdings["snapshot_date"].unique())[-2:]
    for folder in (root / "data", tmp_path):
        with split_bank(folder, last_snapshots=2, part_size=1000) as bank:
            parts = [bank.read(i, engine.catalog) for i in range(bank.parts)]
        ids = pd.concat([p.customers["customer_id"] for p in parts])
        assert sorted(ids) == sorted(customers["customer_id"])
        assert sum(len(p.holdings) for p in parts) == holdings["snapshot_date"].isin(latest).sum()
        assert all(p.snapshots == [pd.Timestamp(d) for d in latest] for p in parts)
        for p in parts:  # a customer's holdings are in the customer's own part
            assert set(p.holdings["customer_id"].astype(str)) <= set(p.customers["customer_id"])


def test_a_split_in_a_child_process_gives_the_same_parts(bank_and_engine, tmp_path):
    """Large banks are split in a spawned child (its memory goes back to the system)."""
    from recommender.data.partition import split_bank
    from recommender.exceptions import DataValidationError

    root, engine, _ = bank_and_engine
    with (split_bank(root / "data", 2, part_size=1000, in_child=True) as child,
          split_bank(root / "data", 2, part_size=1000, in_child=False) as here):
        for i in range(here.parts):
            a, b = child.read(i, engine.catalog), here.read(i, engine.catalog)
            pd.testing.assert_frame_equal(a.customers, b.customers)
            pd.testing.assert_frame_equal(a.holdings, b.holdings)
    (tmp_path / "customers.csv").write_text("customer_id\nC1\n")
    (tmp_path / "holdings.csv").write_text("product_id,snapshot_date\nx,2026-01-31\n")
    with pytest.raises(DataValidationError, match="customer_id.*holdings.csv"):  # from the child
        split_bank(tmp_path, 1, in_child=True).close()


def test_bad_extracts_are_refused_naming_the_file(bank_and_engine, tmp_path):
    from recommender.data.partition import split_bank
    from recommender.exceptions import DataValidationError

    root, engine, _ = bank_and_engine
    customers = pd.read_parquet(root / "data" / "customers.parquet")
    holdings = pd.read_parquet(root / "data" / "holdings.parquet").astype(str)
    customers.to_parquet(tmp_path / "customers.parquet")
    holdings.loc[5, "snapshot_date"] = "not a date"
    holdings.to_csv(tmp_path / "holdings.csv", index=False)
    with pytest.raises(DataValidationError, match="not a date.*holdings.csv"):
        split_bank(tmp_path, last_snapshots=2)
    holdings.loc[5, "snapshot_date"] = holdings.loc[4, "snapshot_date"]
    holdings.to_csv(tmp_path / "holdings.csv", index=False)
    pd.concat([customers, customers.head(1)]).to_parquet(tmp_path / "customers.parquet")
    with (split_bank(tmp_path, last_snapshots=2, part_size=500) as bank,  # same id, same part
          pytest.raises(DataValidationError, match="duplicate customer id")):
        for i in range(bank.parts):
            bank.read(i, engine.catalog)


def test_a_tampered_or_missing_campaign_pack_is_refused(bank_and_engine, tmp_path):
    import sqlalchemy as sa

    from recommender.service import open_decision_log
    from recommender.store import tables
    from recommender.store.decisions import DecisionLogError

    _, engine, book = bank_and_engine
    with open_decision_log(tmp_path / "state") as log:
        frame = run_campaign(engine, book, _spec(), progress=None, decisions=log)
        first = frame["decision_id"].iloc[0]
        with log.database.begin(write=True) as db:
            db.execute(sa.update(tables.decisions).where(tables.decisions.c.id == first)
                       .values(inputs_fingerprint="x:0"))
        with pytest.raises(DecisionLogError, match="inconsistent"):
            log.get(first)
        with log.database.begin(write=True) as db:
            db.execute(sa.delete(tables.decision_packs))
        with pytest.raises(DecisionLogError, match="pack holding its inputs is missing"):
            log.get(frame["decision_id"].iloc[1])


def test_a_log_made_before_packs_existed_is_imported_and_keeps_its_decisions(tmp_path):
    """A state folder's decisions.db written before packs existed (no pack columns, no
    decision_packs table) is brought into the database by `nbo db upgrade`, whole."""
    import sqlite3

    from recommender.service import open_decision_log
    from recommender.store.database import Database
    from recommender.store.decision_key import load_or_create_key
    from recommender.store.decisions import DecisionLog

    state = tmp_path / "state"
    state.mkdir()
    key = load_or_create_key(state / "decision.key")
    with DecisionLog(tmp_path / "scratch.db", key) as scratch:  # a row as logs hold them
        decision_id = scratch.record(customer_id="C1", source="api", model_version="m",
                                     policy_version="p", policy_text="t", inputs={"a": 1},
                                     output={"b": 2})
    columns = ("id, created_at, source, customer_hash, model_version, policy_version, "
               "inputs_fingerprint, payload, policy_hash")
    with sqlite3.connect(tmp_path / "scratch.db") as db:
        decision = db.execute(f"SELECT {columns} FROM decisions").fetchone()
        policy = db.execute("SELECT policy_version, policy_hash, policy_text FROM policies"
                            ).fetchone()
    legacy = sqlite3.connect(state / "decisions.db")
    with legacy:
        legacy.executescript(
            "CREATE TABLE decisions (id TEXT PRIMARY KEY, created_at TEXT NOT NULL, source TEXT "
            "NOT NULL, customer_hash TEXT NOT NULL, model_version TEXT NOT NULL, policy_version "
            "TEXT NOT NULL, inputs_fingerprint TEXT NOT NULL, payload BLOB NOT NULL, policy_hash "
            "TEXT NOT NULL); CREATE TABLE policies (policy_version TEXT NOT NULL, policy_hash "
            "TEXT PRIMARY KEY, policy_text TEXT NOT NULL);")
        legacy.execute(f"INSERT INTO decisions ({columns}) VALUES ({', '.join('?' * 9)})",
                       decision)
        legacy.execute("INSERT INTO policies VALUES (?, ?, ?)", policy)
    legacy.close()

    url = f"sqlite:///{tmp_path / 'nbo.db'}"
    assert main(["db", "upgrade", "--state", str(state), "--database", url]) == 0
    assert not (state / "decisions.db").exists() and (state / "decisions.db.imported").is_file()
    database = Database(url)
    with open_decision_log(state, database=database) as log:
        assert log.count() == 1
        assert log.get(decision_id).output == {"b": 2}
        assert log.get(decision_id).inputs == {"a": 1}
    database.dispose()


def test_a_campaign_reads_as_much_response_history_as_the_policy(bank_and_engine, tmp_path):
    """A decline older than 90 days but inside a longer cooldown keeps the product out of the
    campaign, as it does at the counter."""
    from dataclasses import replace as replaced
    from datetime import UTC, datetime, timedelta

    from recommender.store.responses import ResponseStore

    _, engine, book = bank_and_engine
    policy = replaced(engine.policy, decline_cooldown_days=200)
    long_memory = OfferEngine(engine.model, policy)
    spec = _spec(max_offers_per_customer=1)
    first = run_campaign(long_memory, book, spec, progress=None)
    customer, product = first.iloc[0][["customer_id", "product_id"]]
    store = ResponseStore(tmp_path / "nbo.db",
                          product_ids=[str(p) for p in engine.catalog.ids.external_ids])
    store.record(customer, product, "declined", "branch",
                 at=datetime.now(UTC) - timedelta(days=150))
    again = run_campaign(long_memory, book, spec, responses=store, progress=None)
    offered = again[again["customer_id"] == customer]["product_id"].tolist()
    assert product not in offered
    store.close()
