"""A real Spark (``local[2,3]``: two cores, each task tried up to three times) started once for
the session, and the banks its tests run on: a demo bank with further columns and a
time-varying extract, and a bank of account intervals with nothing but customer ids.

Without Java the tests skip, saying so, except under ``make test`` (NBO_REQUIRE_SPARK=1),
which installs a JRE first: there they fail.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest

from recommender.cli import main
from recommender.policy.offers import OfferEngine
from recommender.ranking import artifacts

from account_intervals import intervals_of


@pytest.fixture(scope="session")
def spark():
    if shutil.which("java") is None:
        if os.environ.get("NBO_REQUIRE_SPARK"):
            pytest.fail("java is missing: `make test` installs a headless JRE for pyspark")
        pytest.skip("java is missing (pyspark needs Java 17+; `make test` installs it)")
    from recommender.spark.session import spark_session

    session = spark_session("local[2,3]", "nbo tests")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _features(customers: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A time-varying extract: each customer's balance band at a few month-ends (some
    customers have none)."""
    rng = np.random.default_rng(seed)
    ids = customers["customer_id"].to_numpy()[rng.random(len(customers)) < 0.8]
    dates = pd.to_datetime(["2026-07-31", "2026-08-31", "2026-09-30"])
    rows = pd.DataFrame({"customer_id": np.repeat(ids, len(dates)),
                         "snapshot_date": np.tile(dates, len(ids))})
    rows["balance_band"] = rng.choice(["low", "mid", "high"], len(rows))
    rows["deposits_3m"] = rng.gamma(2.0, 5000.0, len(rows)).round(2)
    return rows


@pytest.fixture(scope="package")
def demo_bank(tmp_path_factory):
    """(data folder, models folder, engine): 2,500 demo customers with three further columns
    and a time-varying extract, and the model ``nbo train`` makes of them."""
    root = tmp_path_factory.mktemp("spark-demo")
    data, models = root / "data", root / "models"
    assert main(["demo-data", "--customers", "2500", "--months", "5", "--seed", "7",
                 "--extra-columns", "3", "--out", str(data)]) == 0
    customers = pd.read_parquet(data / "customers.parquet")
    _features(customers, 7).to_parquet(data / "customer_features.parquet", index=False)
    assert main(["train", "--data", str(data), "--models", str(models)]) == 0
    return data, models, OfferEngine(artifacts.load(models))


@pytest.fixture(scope="package")
def interval_bank(tmp_path_factory):
    """(data folder, models folder, engine): 1,500 customers known by id only, holdings as
    account intervals in CSV, a catalog drafted by ``nbo init-catalog``, trained by ``nbo
    train``."""
    root = tmp_path_factory.mktemp("spark-intervals")
    demo, data, models = root / "demo", root / "data", root / "models"
    assert main(["demo-data", "--customers", "1500", "--months", "5", "--seed", "3",
                 "--out", str(demo)]) == 0
    data.mkdir()
    pd.read_parquet(demo / "customers.parquet")[["customer_id"]].to_csv(
        data / "customers.csv", index=False)
    intervals_of(pd.read_parquet(demo / "holdings.parquet")).to_csv(data / "holdings.csv",
                                                                    index=False)
    catalog = root / "catalog.toml"  # the bank's own, drafted from its holdings
    assert main(["init-catalog", "--data", str(data), "--out", str(catalog)]) == 0
    catalog.write_text(catalog.read_text(encoding="utf-8")
                       .replace('category = "unclassified"', 'category = "deposit"')
                       .replace('risk_grade = "R5"', 'risk_grade = "R1"'), encoding="utf-8")
    assert main(["train", "--data", str(data), "--catalog", str(catalog), "--models",
                 str(models)]) == 0
    return data, models, OfferEngine(artifacts.load(models))
