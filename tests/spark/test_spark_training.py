"""``nbo train --engine spark``: Spark reads and checks the bank, a deterministic hash sample
keeps about the configured number of customers with all of their rows, and the model is
trained on it as on one machine."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recommender.cli import main
from recommender.data.catalog import load_catalog
from recommender.exceptions import DataValidationError
from recommender.spark.extracts import ExtractLocations
from recommender.spark.training import sample_to_folder

pytestmark = [pytest.mark.filterwarnings("ignore::ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


def _sample(spark, data, folder, above):
    return sample_to_folder(spark, ExtractLocations.of(str(data)), load_catalog(), folder,
                            above, part_size=700)


def test_the_sample_is_deterministic_and_keeps_every_row_of_its_customers(spark, demo_bank,
                                                                         tmp_path):
    data = demo_bank[0]
    first = _sample(spark, data, tmp_path / "a", 1000)
    again = _sample(spark, data, tmp_path / "b", 1000)
    ids = pd.read_parquet(first / "customers.parquet")["customer_id"]
    assert 850 <= len(ids) <= 1150  # about the size asked for
    assert set(ids) == set(pd.read_parquet(again / "customers.parquet")["customer_id"])
    holdings = pd.read_parquet(data / "holdings.parquet")
    mine = holdings[holdings["customer_id"].isin(ids)]
    sampled = pd.read_parquet(first / "holdings.parquet")
    assert len(sampled) == len(mine)
    features = pd.read_parquet(first / "customer_features.parquet")
    assert set(features["customer_id"]) <= set(ids) and len(features) > 0


def test_train_on_spark_trains_on_the_whole_bank_below_the_sample_size(spark, demo_bank,
                                                                       tmp_path):
    data = demo_bank[0]
    models = tmp_path / "models"
    assert main(["train", "--engine", "spark", "--data", str(data), "--models", str(models),
                 "--no-evaluate"]) == 0
    manifest = json.loads(next(models.glob("*/manifest.json")).read_text(encoding="utf-8"))
    assert manifest["data"]["customers"] == 2500
    assert manifest["data"]["holdings_rows"] == len(pd.read_parquet(data / "holdings.parquet"))


def test_train_on_spark_samples_above_the_configured_size(spark, demo_bank, tmp_path):
    models = tmp_path / "models"
    assert main(["train", "--engine", "spark", "--data", str(demo_bank[0]), "--models",
                 str(models), "--sample-above", "1200", "--no-evaluate"]) == 0
    manifest = json.loads(next(models.glob("*/manifest.json")).read_text(encoding="utf-8"))
    assert 1000 <= manifest["data"]["customers"] <= 1400


def test_a_bad_part_stops_training_with_the_named_error(spark, demo_bank, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    customers = pd.read_parquet(demo_bank[0] / "customers.parquet")
    customers = customers.astype({"income": str})
    customers.loc[customers.index[11], "income"] = "a lot"
    customers.to_parquet(bad / "customers.parquet", index=False)
    pd.read_parquet(demo_bank[0] / "holdings.parquet").to_parquet(bad / "holdings.parquet",
                                                                  index=False)
    with pytest.raises(DataValidationError) as error:
        _sample(spark, bad, tmp_path / "sample", 1000)
    assert error.value.column == "income"
