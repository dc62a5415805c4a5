"""The closed-loop simulation runs end to end on a small bank and reports what it promises;
the demo generator's true take-up probability, which it reads, is 0 where the generator
never draws a take-up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from recommender.data.catalog import load_catalog
from recommender.data.demo import generate, take_up_probability
from recommender.data.eligibility import eligibility_mask
from recommender.data.life_stages import load_life_stages

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "simulate_loop.py"


def test_true_take_up_is_zero_where_held_or_not_allowed():
    catalog, stages = load_catalog(), load_life_stages()
    demo = generate(800, 2, 5, catalog, stages)
    held = np.zeros((800, len(catalog)), dtype=bool)
    last = demo.holdings[demo.holdings["snapshot_date"] == demo.holdings["snapshot_date"].max()]
    index = {c: i for i, c in enumerate(demo.customers["customer_id"])}
    held[[index[c] for c in last["customer_id"]],
         catalog.ids.to_internal(last["product_id"])] = True
    p = take_up_probability(demo.customers, held, catalog, stages)
    assert p.shape == held.shape and (p[held] == 0).all()
    assert (p[~eligibility_mask(demo.customers, catalog)] == 0).all()
    assert ((p >= 0) & (p < 1)).all() and (p > 0).mean() > 0.2


def test_a_short_simulation_reports_every_figure(tmp_path):
    out = tmp_path / "loop.json"
    subprocess.run([sys.executable, str(SCRIPT), "--customers", "1500", "--days", "3",
                    "--change-day", "1", "--app-sessions", "0.2", "--json", str(out)],
                   check=True, capture_output=True, timeout=900)
    result = json.loads(out.read_text())
    for key in ("accept_rate_after_change", "value_after_change"):
        assert set(result[key]) == {"static", "adaptive"}
        assert all(0 <= v < 1 for v in result[key].values())
    assert set(result["days_until_collapsed_drops"]) == {"static", "adaptive"}
    assert result["cap_violations"] == 0
    assert result["new_product"]["shows_by_arm"]["static"] == 0  # the static model cannot
    assert "new_product_shows_to_20pct" in result and result["collapsed_product"]
