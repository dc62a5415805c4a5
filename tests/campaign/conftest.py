"""The campaign tests' bank: 3,000 demo customers written to disk and a hybrid model trained
on them, once for the folder (training takes most of the folder's time)."""

from __future__ import annotations

import pytest

from recommender.data.book import CustomerBook
from recommender.data.catalog import catalog_text, parse_catalog
from recommender.data.demo import generate
from recommender.data.extracts import BankData, write_bank
from recommender.data.life_stages import life_stages_text, parse_life_stages
from recommender.policy.offers import OfferEngine
from recommender.ranking.config import TrainConfig
from recommender.ranking.training import train


@pytest.fixture(scope="package")
def bank_and_engine(tmp_path_factory):
    """(folder with ``data/`` and ``models/``, engine of the calibrated model, customer book)."""
    root = tmp_path_factory.mktemp("campaign")
    cat_text, st_text = catalog_text()[0], life_stages_text()[0]
    catalog, stages = parse_catalog(cat_text), parse_life_stages(st_text)
    demo = generate(3000, 4, 11, catalog, stages)
    bank = BankData(demo.customers, demo.holdings)
    write_bank(bank, root / "data")
    model = train(bank, catalog, stages, TrainConfig(ranker="hybrid"), root / "models",
                  cat_text, st_text)
    engine = OfferEngine(model)
    book = CustomerBook(bank, catalog, stages)
    return root, engine, book
