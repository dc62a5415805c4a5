"""``nbo`` command-line tests, run in-process through ``recommender.cli.main``.

One small demo bank is generated and trained once for the module with the CLI itself;
the tests then check the files and outputs the commands produce. ``serve`` is not run
(it execs gunicorn).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from recommender.cli import main
from recommender.data import columns as C
from recommender.data.catalog import catalog_text, parse_catalog

CUSTOMERS, MONTHS, SEED = 1500, 4, 7
METHODS = {"popularity", "recent_popularity", "plain_gbdt", "life_stage_prior", "als", "item_knn",
           "hybrid", "acquisition"}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def cli_demo(cli_root) -> tuple[int, Path]:
    """(exit code, folder) of ``nbo demo-data``."""
    out = cli_root / "data"
    rc = main(["demo-data", "--customers", str(CUSTOMERS), "--months", str(MONTHS),
               "--seed", str(SEED), "--out", str(out)])
    return rc, out


@pytest.fixture(scope="module")
def cli_trained(cli_demo, cli_root) -> tuple[int, Path]:
    """(exit code, models folder) of ``nbo train`` on the demo bank."""
    rc_demo, data = cli_demo
    assert rc_demo == 0
    models = cli_root / "models"
    rc = main(["train", "--data", str(data), "--models", str(models)])
    return rc, models


@pytest.fixture(scope="module")
def cli_customer(cli_demo) -> str:
    """A consenting customer who holds at least two products at the last snapshot."""
    _, data = cli_demo
    customers = pd.read_parquet(data / "customers.parquet")
    holdings = pd.read_parquet(data / "holdings.parquet")
    last = holdings[holdings[C.SNAPSHOT_DATE] == holdings[C.SNAPSHOT_DATE].max()]
    counts = last.groupby(last[C.CUSTOMER_ID].astype(str)).size()
    consenting = set(customers.loc[customers[C.CONSENT_PROFILING], C.CUSTOMER_ID])
    return next(cid for cid in counts[counts >= 2].index if cid in consenting)


def _errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# --------------------------------------------------------------------------- help


def test_nbo_help_exits_zero():
    nbo = Path(sys.executable).with_name("nbo")
    assert nbo.is_file(), f"the console script is not installed next to {sys.executable}"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([str(nbo), "--help"], capture_output=True, text=True, timeout=60,
                          env=env, check=False)
    assert done.returncode == 0, done.stderr
    for command in ("demo-data", "train", "evaluate", "recommend", "serve"):
        assert command in done.stdout


def test_no_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "usage" in capsys.readouterr().err


# --------------------------------------------------------------------------- demo-data


def test_demo_data_writes_both_extracts(cli_demo):
    rc, data = cli_demo
    assert rc == 0
    assert sorted(p.name for p in data.iterdir()) == ["customers.parquet", "holdings.parquet"]
    customers = pd.read_parquet(data / "customers.parquet")
    holdings = pd.read_parquet(data / "holdings.parquet")
    assert len(customers) == CUSTOMERS
    assert customers[C.CUSTOMER_ID].is_unique
    assert holdings[C.SNAPSHOT_DATE].nunique() == MONTHS
    assert set(holdings[C.CUSTOMER_ID].astype(str)) <= set(customers[C.CUSTOMER_ID])
    assert {C.CUSTOMER_ID, C.PRODUCT_ID, C.SNAPSHOT_DATE} <= set(holdings.columns)


def test_demo_data_is_reproducible(cli_demo, tmp_path):
    _, data = cli_demo
    again = tmp_path / "again"
    assert main(["demo-data", "--customers", str(CUSTOMERS), "--months", str(MONTHS),
                 "--seed", str(SEED), "--out", str(again)]) == 0
    for name in ("customers.parquet", "holdings.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(data / name),
                                      pd.read_parquet(again / name))


# --------------------------------------------------------------------------- train


def test_train_creates_a_version_and_current(cli_trained, cli_demo):
    rc, models = cli_trained
    assert rc == 0
    versions = [p for p in models.iterdir() if p.is_dir() and not p.is_symlink()
                and not p.name.startswith(".")]
    assert len(versions) == 1
    version = versions[0]
    manifest = json.loads((version / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["version"] == version.name
    assert manifest["data"]["customers"] == CUSTOMERS
    assert manifest["data"]["snapshots"] == MONTHS
    assert set(manifest["metrics"]["methods"]) == METHODS
    current = models / "current"
    assert current.is_symlink()
    assert current.resolve() == version.resolve()
    assert (current / "manifest.json").is_file()


def test_train_prints_the_metrics_table(cli_demo, tmp_path, capsys):
    _, data = cli_demo
    assert main(["train", "--data", str(data), "--models", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    for method in METHODS:
        assert method in out
    assert "<- served" in out


def test_train_again_moves_current_to_the_new_version(cli_demo, tmp_path):
    _, data = cli_demo
    models = tmp_path / "models"
    assert main(["train", "--data", str(data), "--models", str(models), "--no-evaluate"]) == 0
    first = (models / "current").resolve()
    assert main(["train", "--data", str(data), "--models", str(models), "--no-evaluate",
                 "--cf", "item_knn"]) == 0
    second = (models / "current").resolve()
    assert first != second and first.is_dir() and second.is_dir()
    manifest = json.loads((second / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["parameters"]["cf"]["kind"] == "item_knn"
    assert manifest["metrics"] == {}


def test_train_with_a_missing_data_folder(tmp_path, caplog):
    missing = tmp_path / "no_such_folder"
    models = tmp_path / "models"
    rc = main(["train", "--data", str(missing), "--models", str(models)])
    assert rc == 2
    errors = _errors(caplog)
    assert errors, "the failure is logged"
    assert any(str(missing) in message for message in errors), errors
    assert not (models / "current").exists()


def test_train_with_a_bad_catalog_risk_grade(cli_demo, tmp_path, caplog):
    _, data = cli_demo
    text, _ = catalog_text()
    assert 'risk_grade = "R1"' in text
    bad = tmp_path / "catalog.toml"
    bad.write_text(text.replace('risk_grade = "R1"', 'risk_grade = "R9"', 1), encoding="utf-8")
    models = tmp_path / "models"
    rc = main(["train", "--data", str(data), "--models", str(models), "--catalog", str(bad)])
    assert rc == 2
    errors = _errors(caplog)
    assert any("risk_grade" in m and "R9" in m and str(bad) in m for m in errors), errors
    assert not models.exists() or not any(models.iterdir())


def test_demo_data_with_a_bad_catalog_risk_grade(tmp_path, caplog):
    text, _ = catalog_text()
    bad = tmp_path / "catalog.toml"
    bad.write_text(text.replace('risk_grade = "R1"', 'risk_grade = "high"', 1), encoding="utf-8")
    rc = main(["demo-data", "--customers", "50", "--months", "2", "--catalog", str(bad),
               "--out", str(tmp_path / "data")])
    assert rc == 2
    assert any("risk_grade" in m for m in _errors(caplog))
    assert not (tmp_path / "data").exists()


def test_init_catalog_drafts_the_holdings_products_and_trains(cli_demo, tmp_path, caplog):
    """One product per id held, sorted; the draft loads and trains as it is."""
    _, data = cli_demo
    out = tmp_path / "bank" / "catalog.toml"
    assert main(["init-catalog", "--data", str(data), "--out", str(out)]) == 0
    held = sorted(pd.read_parquet(data / "holdings.parquet")[C.PRODUCT_ID].astype(str).unique())
    catalog = parse_catalog(out.read_text(encoding="utf-8"), str(out))
    assert catalog.ids.external_ids.tolist() == held
    assert {(p.category, p.risk_grade) for p in catalog.products} == {("unclassified", "R5")}
    models = tmp_path / "models"
    assert main(["train", "--data", str(data), "--models", str(models),
                 "--catalog", str(out)]) == 0, _errors(caplog)
    assert (models / "current").exists()


def test_init_catalog_reads_csv_holdings_as_the_loader_does(tmp_path):
    """Ids are stripped and empty ids dropped, as the holdings reader does."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "holdings.csv").write_text(
        "customer_id,product_id,snapshot_date\nC1, loan ,2024-01-31\nC1,card,2024-01-31\n"
        "C2,loan,2024-01-31\nC3,,2024-01-31\n", encoding="utf-8")
    out = tmp_path / "catalog.toml"
    assert main(["init-catalog", "--data", str(data), "--out", str(out)]) == 0
    assert parse_catalog(out.read_text(encoding="utf-8")).ids.external_ids.tolist() == [
        "card", "loan"]


def test_init_catalog_refuses_to_overwrite_unless_forced(cli_demo, tmp_path, caplog):
    _, data = cli_demo
    out = tmp_path / "catalog.toml"
    out.write_text("# the bank's edited catalog\n", encoding="utf-8")
    assert main(["init-catalog", "--data", str(data), "--out", str(out)]) == 2
    assert any(str(out) in m and "--force" in m for m in _errors(caplog)), _errors(caplog)
    assert out.read_text(encoding="utf-8") == "# the bank's edited catalog\n"
    assert main(["init-catalog", "--data", str(data), "--out", str(out), "--force"]) == 0
    assert len(parse_catalog(out.read_text(encoding="utf-8"))) > 0


def test_init_catalog_with_a_missing_data_folder(tmp_path, caplog):
    missing = tmp_path / "no_such_folder"
    out = tmp_path / "catalog.toml"
    assert main(["init-catalog", "--data", str(missing), "--out", str(out)]) == 2
    assert any("data folder not found" in m and str(missing) in m for m in _errors(caplog))
    assert not out.exists()


def test_init_catalog_without_holdings(tmp_path, caplog):
    assert main(["init-catalog", "--data", str(tmp_path), "--out",
                 str(tmp_path / "catalog.toml")]) == 2
    assert any("no holdings.parquet or holdings.csv" in m for m in _errors(caplog))
    assert not (tmp_path / "catalog.toml").exists()


def test_train_with_an_invalid_factor_count(cli_demo, tmp_path, caplog):
    _, data = cli_demo
    rc = main(["train", "--data", str(data), "--models", str(tmp_path / "m"), "--factors", "0"])
    assert rc == 2
    assert any("factors" in m for m in _errors(caplog))


# --------------------------------------------------------------------------- evaluate


def test_evaluate_writes_json(cli_demo, tmp_path, capsys):
    _, data = cli_demo
    out = tmp_path / "out.json"
    assert main(["evaluate", "--data", str(data), "--json", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert set(result["methods"]) == METHODS
    assert result["served"] == "hybrid"
    k = result["k"]
    assert result["test_customers"] > 0
    for name, metrics in result["methods"].items():
        for key in (f"map@{k}", f"recall@{k}", f"ndcg@{k}"):
            assert 0.0 <= metrics[key] <= 1.0, (name, key, metrics[key])
    assert "<- served" in capsys.readouterr().out


def test_evaluate_records_metrics_in_the_current_manifest(cli_trained, cli_demo, tmp_path):
    """--record stores the metrics in the manifest of the model trained on these extracts."""
    _, models = cli_trained
    _, data = cli_demo
    manifest_path = models / "current" / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["metrics"] = {}
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    assert main(["evaluate", "--data", str(data), "--models", str(models), "--record"]) == 0
    recorded = json.loads(manifest_path.read_text(encoding="utf-8"))["metrics"]
    assert recorded["served"] in {"hybrid", "acquisition"}
    assert set(recorded["methods"]) == METHODS


def test_evaluate_refuses_to_record_for_a_model_of_other_data(cli_trained, tmp_path, caplog):
    """Metrics of other extracts never overwrite a model's own."""
    _, models = cli_trained
    other = tmp_path / "other"
    assert main(["demo-data", "--customers", "300", "--months", "3", "--seed", "99",
                 "--out", str(other)]) == 0
    before = (models / "current" / "manifest.json").read_text(encoding="utf-8")
    assert main(["evaluate", "--data", str(other), "--models", str(models), "--record"]) == 2
    assert any("trained on other data" in m for m in _errors(caplog))
    assert (models / "current" / "manifest.json").read_text(encoding="utf-8") == before


def test_evaluate_with_two_snapshots_cross_validates(tmp_path, caplog):
    """Too few months for a back-test: the propensity to own, cross-validated, and said."""
    data = tmp_path / "short"
    assert main(["demo-data", "--customers", "400", "--months", "2", "--out", str(data)]) == 0
    rc = main(["evaluate", "--data", str(data), "--json", str(tmp_path / "out.json")])
    assert rc == 0
    assert "it needs 3" in caplog.text and "cross-validation" in caplog.text
    result = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert result["evaluation"] == "cross_validation" and result["metric"] == "mean_auc"


# --------------------------------------------------------------------------- recommend


def test_recommend_json(cli_trained, cli_demo, cli_customer, capsys):
    rc_train, models = cli_trained
    assert rc_train == 0
    _, data = cli_demo
    capsys.readouterr()
    rc = main(["recommend", "--state", str(models.parent / "state"), "--data", str(data),
                "--models", str(models),
               "--customer", cli_customer, "--json", "--limit", "3"])
    assert rc == 0
    results = json.loads(capsys.readouterr().out)
    assert isinstance(results, list) and len(results) == 1
    result = results[0]
    assert result["customer_id"] == cli_customer
    assert result["model_version"] == (models / "current").resolve().name
    assert result["source"] == "cf"
    offers = result["offers"]
    assert [o["rank"] for o in offers] == [1, 2, 3]
    assert all(o["reasons"] for o in offers)


def test_recommend_several_customers_in_chinese(cli_trained, cli_demo, capsys):
    _, models = cli_trained
    _, data = cli_demo
    capsys.readouterr()
    rc = main(["recommend", "--state", str(models.parent / "state"), "--data", str(data),
                "--models", str(models), "--customer",
               "C00000001", "--customer", "C00000002", "--json", "--lang", "zh"])
    assert rc == 0
    out = capsys.readouterr().out
    results = json.loads(out)
    assert [r["customer_id"] for r in results] == ["C00000001", "C00000002"]
    assert all(o["name"] == o["name_zh"] for r in results for o in r["offers"])
    assert "\\u" not in out, "Chinese is written as characters"


def test_recommend_text_output(cli_trained, cli_demo, cli_customer, capsys):
    _, models = cli_trained
    _, data = cli_demo
    capsys.readouterr()
    assert main(["recommend", "--state", str(models.parent / "state"), "--data", str(data),
                "--models", str(models),
                 "--customer", cli_customer]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(cli_customer)
    assert lines[1].split() == ["rank", "priority", "propensity", "source", "offer", "—",
                                "reason"]
    rows = [line.split(maxsplit=4) for line in lines[2:]]
    assert [row[0] for row in rows] == ["1", "2", "3", "4", "5"]
    assert all(row[3] == "cf" for row in rows)
    # the table is in the order of the column it prints, and it is the API's order
    priorities = [float(row[1]) for row in rows]
    assert priorities == sorted(priorities, reverse=True)
    assert main(["recommend", "--state", str(models.parent / "state"), "--data", str(data),
                 "--models", str(models), "--customer", cli_customer, "--json"]) == 0
    offers = json.loads(capsys.readouterr().out)[0]["offers"]
    assert priorities == [o["priority"] for o in offers]
    assert [float(row[2]) for row in rows] == [o["propensity"] for o in offers]
    assert [row[4].split(" — ")[0] for row in rows] == [o["name"] for o in offers]


def test_recommend_table_prints_priority_not_the_ranker_score():
    """The raw ranker score orders nothing the teller sees: it is not in the table."""
    from recommender.cli.decisions import _offer_table

    result = {"customer_id": "C1", "life_stage": {"name": "Retired"}, "offers": [
        {"rank": 1, "name": "Time deposit", "source": "acquisition", "score": -4.5,
         "priority": 0.25, "propensity": 0.125, "reasons": [{"text": "held it before"}]},
        {"rank": 2, "name": "Bond fund", "source": "acquisition", "score": -1.5,
         "priority": 0.0625, "propensity": 0.5, "reasons": []},
    ]}
    lines = _offer_table(result).splitlines()
    assert lines[0] == "C1 (Retired):"
    assert [line.split()[:4] for line in lines[2:]] == [
        ["1", "0.250000", "0.125000", "acquisition"], ["2", "0.062500", "0.500000", "acquisition"]]
    assert lines[2].endswith("Time deposit — held it before")
    assert lines[3].endswith("Bond fund")
    assert "-4.5" not in _offer_table(result)
    assert _offer_table({**result, "offers": []}).splitlines() == ["C1 (Retired):", "  no offer"]


def test_recommend_unknown_customer(cli_trained, cli_demo, caplog):
    _, models = cli_trained
    _, data = cli_demo
    rc = main(["recommend", "--state", str(models.parent / "state"), "--data", str(data),
                "--models", str(models),
               "--customer", "NOBODY"])
    assert rc == 2
    assert any("NOBODY" in m for m in _errors(caplog))


def test_recommend_without_a_model(cli_demo, tmp_path, caplog):
    _, data = cli_demo
    rc = main(["recommend", "--state", str(tmp_path / "state"), "--data", str(data),
                "--models", str(tmp_path / "empty"),
               "--customer", "C00000001"])
    assert rc == 2
    assert any("nbo train" in m for m in _errors(caplog))


def test_recommend_rejects_an_unknown_language(cli_trained, cli_demo, capsys):
    _, models = cli_trained
    _, data = cli_demo
    with pytest.raises(SystemExit) as exc:
        main(["recommend", "--state", str(models.parent / "state"), "--data", str(data),
                "--models", str(models),
              "--customer", "C00000001", "--lang", "fr"])
    assert exc.value.code == 2
    assert "--lang" in capsys.readouterr().err


# --------------------------------------------------------------------------- campaign


def test_campaign_for_an_unknown_product_fails_before_reading_the_bank(
        cli_trained, cli_demo, tmp_path, monkeypatch, caplog):
    import recommender.data.partition as partition

    def no_reading(*args, **kwargs):
        raise AssertionError("the bank was opened for an unknown product")

    monkeypatch.setattr(partition, "open_customers", no_reading)
    _, models = cli_trained
    _, data = cli_demo
    out = tmp_path / "targets.csv"
    rc = main(["campaign", "--for-product", "bond_fnd", "--all", "--out", str(out),
               "--data", str(data), "--models", str(models)])
    assert rc == 2
    errors = _errors(caplog)
    assert any("'bond_fnd' is not in the model's catalog" in m and "bond_fund" in m
               for m in errors), errors
    assert not out.exists()


def test_campaign_top_and_all_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["campaign", "--for-product", "bond_fund", "--top", "5", "--all", "--out", "x.csv"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# --------------------------------------------------------------------------- bugs


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # an argparse usage error is a clean failure too
        return exc.code


def test_demo_data_with_too_few_months_is_a_clean_error(tmp_path):
    assert _exit_code(["demo-data", "--customers", "10", "--months", "1",
                       "--out", str(tmp_path / "d")]) == 2


def test_train_with_an_out_of_range_date_is_a_clean_error(cli_demo, tmp_path, caplog):
    _, data = cli_demo
    folder = tmp_path / "data"
    folder.mkdir()
    customers = pd.read_parquet(data / "customers.parquet")
    customers[C.RISK_ASSESSED_ON] = customers[C.RISK_ASSESSED_ON].dt.strftime("%Y-%m-%d")
    customers.loc[3, C.RISK_ASSESSED_ON] = "9999-12-31"
    customers.to_csv(folder / "customers.csv", index=False)
    (folder / "holdings.parquet").write_bytes((data / "holdings.parquet").read_bytes())
    rc = main(["train", "--data", str(folder), "--models", str(tmp_path / "m")])
    assert rc == 2
    assert any(C.RISK_ASSESSED_ON in m for m in _errors(caplog))


def test_train_on_one_snapshot_says_it_cross_validates(cli_demo, tmp_path, capsys, caplog):
    """One snapshot: no back-test; the propensity to own is served and cross-validated."""
    import pandas as pd

    _, data = cli_demo
    one = tmp_path / "one"
    one.mkdir()
    for name in ("customers", "holdings"):
        source = next(data.glob(f"{name}.*"))
        frame = pd.read_parquet(source) if source.suffix == ".parquet" else pd.read_csv(source)
        if name == "holdings":
            frame = frame[frame["snapshot_date"] == frame["snapshot_date"].max()]
        frame.to_parquet(one / f"{name}.parquet", index=False)
    assert main(["train", "--data", str(one), "--models", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert "5-fold cross-validation by customer" in out and "mean AUC" in out
    assert "ownership" in out and "<- served" in out
    assert "no held-out month to back-test a take-up model" in caplog.text
    manifest = json.loads((tmp_path / "m" / "current" / "manifest.json").read_text("utf-8"))
    assert manifest["served"] == "ownership"
    assert manifest["metrics"]["evaluation"] == "cross_validation"
