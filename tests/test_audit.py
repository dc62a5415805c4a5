"""Fairness audit: four-fifths flags on known offer matrices, and the nbo audit command."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recommender import audit as audit_module
from recommender.audit import FOUR_FIFTHS, age_band, audit
from recommender.cli import main
from recommender.data.demo import generate
from recommender.data.extracts import BankData, write_bank
from recommender.ranking.config import TrainConfig
from recommender.ranking.training import train


def test_age_bands_have_known_edges():
    bands = age_band(np.array([18, 24, 25, 34, 35, 64, 65, 90]))
    assert bands.tolist() == ["<25", "<25", "25-34", "25-34", "35-44", "55-64", "65+", "65+"]


class _Stub:
    """Just what ``audit`` reads of an engine and a book."""

    def __init__(self, products: list[str], profiles: pd.DataFrame) -> None:
        from recommender.data.ids import IdMap

        self.catalog = type("Catalog", (), {"ids": IdMap(products, "product"),
                                            "__len__": lambda s: len(products)})()
        self.policy = type("Policy", (), {"default_channel": "branch", "version": "p"})()
        self.model = type("Model", (), {"version": "m"})()
        self.profiles = profiles

    def __len__(self) -> int:
        return len(self.profiles)


def test_a_group_below_four_fifths_is_flagged_and_others_are_not(monkeypatch):
    """400 women, 400 men; product A offered to 50% of men and 30% of women."""
    n = 800
    profiles = pd.DataFrame({"gender": ["F"] * 400 + ["M"] * 400, "age": [40] * n})
    offered = np.zeros((n, 2), dtype=bool)
    offered[:120, 0] = True  # women: 30%
    offered[400:600, 0] = True  # men: 50%
    offered[:, 1] = True  # product B to everyone
    monkeypatch.setattr(audit_module, "offer_matrix", lambda *a, **k: offered)
    stub = _Stub(["A", "B"], profiles)
    result = audit(stub, stub, limit=5)
    assert result["overall"] == {"A": 0.4, "B": 1.0}
    assert result["flags"] == [{"dimension": "gender", "group": "F", "product_id": "A",
                                "group_rate": 0.3, "overall_rate": 0.4,
                                "ratio": pytest.approx(0.75)}]
    women = next(g for g in result["groups"] if g["group"] == "F")
    assert women["ratio"]["A"] == 0.75 < FOUR_FIFTHS and women["ratio"]["B"] == 1.0


def test_small_groups_and_rare_products_are_not_flagged(monkeypatch):
    profiles = pd.DataFrame({"gender": ["F"] * 50 + ["M"] * 950, "age": [40] * 1000})
    offered = np.zeros((1000, 1), dtype=bool)
    offered[50:300, 0] = True  # no woman gets it, but there are only 50 of them
    monkeypatch.setattr(audit_module, "offer_matrix", lambda *a, **k: offered)
    stub = _Stub(["A"], profiles)
    assert audit(stub, stub, min_group=100)["flags"] == []
    assert [f["group"] for f in audit(stub, stub, min_group=10)["flags"]] == ["F"]


def test_nbo_audit_writes_the_report(tmp_path, capsys):
    from recommender.data.catalog import catalog_text, parse_catalog
    from recommender.data.life_stages import life_stages_text, parse_life_stages

    cat_text, st_text = catalog_text()[0], life_stages_text()[0]
    catalog, stages = parse_catalog(cat_text), parse_life_stages(st_text)
    demo = generate(1500, 4, 3, catalog, stages)
    bank = BankData(demo.customers, demo.holdings)
    write_bank(bank, tmp_path / "data")
    train(bank, catalog, stages, TrainConfig(ranker="hybrid"), tmp_path / "models", cat_text,
          st_text)
    out = tmp_path / "audit"
    assert main(["audit", "--data", str(tmp_path / "data"), "--models",
                 str(tmp_path / "models"), "--out", str(out)]) == 0
    result = json.loads((out / "audit.json").read_text(encoding="utf-8"))
    assert result["customers"] == 1500
    assert {g["dimension"] for g in result["groups"]} == {"gender", "age_band"}
    assert sum(g["customers"] for g in result["groups"] if g["dimension"] == "gender") == 1500
    assert (out / "offer_rate_ratios.png").stat().st_size > 1000
    assert "four-fifths" in capsys.readouterr().out
    assert "Gender is not an input" in (out / "audit.md").read_text(encoding="utf-8")
