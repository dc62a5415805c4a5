"""Model artifacts: save -> load changes nothing; corrupt or foreign folders are refused."""

import json
import os
import shutil

import numpy as np
import pytest

from recommender.data.book import CustomerBook
from recommender.data.life_stages import life_stages_text
from recommender.exceptions import ArtifactError
from recommender.policy.offers import OfferEngine
from recommender.ranking import artifacts
from recommender.ranking.config import CFConfig, TrainConfig
from recommender.ranking.fitting import fit
from recommender.ranking.training import train

pytestmark = pytest.mark.numerics  # compares numbers two code paths compute


@pytest.fixture
def models_dir(tmp_path):
    return tmp_path / "models"


@pytest.fixture
def trained(tiny_bank, tiny_catalog, tiny_catalog_toml, life_stages, models_dir):
    """A model trained (with evaluation) on the tiny bank and saved as the current version."""
    return train(tiny_bank, tiny_catalog, life_stages, TrainConfig(cf=CFConfig(factors=2)),
                 models_dir, tiny_catalog_toml, life_stages_text()[0])


def test_save_then_load_changes_nothing(trained, models_dir, tiny_bank):
    """Same ids, same rates, same config, same scores and fold-in scores after a round trip."""
    loaded = artifacts.load(models_dir)
    assert loaded.version == trained.version
    np.testing.assert_array_equal(loaded.cf.customers.external_ids,
                                  trained.cf.customers.external_ids)
    assert loaded.cf.products == trained.cf.products == loaded.catalog.ids
    np.testing.assert_array_equal(loaded.rates.overall, trained.rates.overall)
    np.testing.assert_array_equal(loaded.rates.by_stage, trained.rates.by_stage)
    assert loaded.config == trained.config
    assert [s.id for s in loaded.stages.stages] == [s.id for s in trained.stages.stages]
    rows = np.arange(len(tiny_bank.customers))
    np.testing.assert_array_equal(loaded.cf.scores(rows), trained.cf.scores(rows))
    # fold-in runs on the memory-mapped arrays of the loaded model
    np.testing.assert_allclose(loaded.cf.fold_in_scores(trained.cf.user_items),
                               trained.cf.fold_in_scores(trained.cf.user_items), rtol=1e-6)
    assert (loaded.cf.user_items != trained.cf.user_items).nnz == 0


def test_loaded_model_makes_the_same_offers(trained, models_dir, tiny_bank):
    """What the server loads offers exactly what training produced, reasons included."""
    loaded = artifacts.load(models_dir)
    book = CustomerBook(tiny_bank, loaded.catalog, loaded.stages)
    batch = book.batch(np.arange(len(book)))
    before = [o.to_dict() for o in OfferEngine(trained).offers(batch, 3)]
    after = [o.to_dict() for o in OfferEngine(loaded).offers(batch, 3)]
    assert after == before


def test_manifest_records_version_data_parameters_libraries_and_metrics(trained, models_dir,
                                                                        tiny_bank):
    manifest = json.loads((models_dir / "current" / "manifest.json").read_text("utf-8"))
    assert manifest == trained.manifest
    assert manifest["format_version"] == artifacts.FORMAT_VERSION
    assert manifest["version"] == trained.version == (models_dir / "current").resolve().name
    assert len(manifest["data"]["fingerprint"]) == 64
    assert manifest["version"].endswith("-" + manifest["data"]["fingerprint"][:8])
    assert manifest["data"]["customers"] == 6 and manifest["data"]["snapshots"] == 3
    assert manifest["data"]["last_snapshot"] == "2026-10-31"
    assert manifest["parameters"]["cf"]["factors"] == 2
    for library in ("python", "implicit", "numpy", "scipy", "pandas", "joblib"):
        assert manifest["libraries"][library][0].isdigit(), library
    assert set(manifest["metrics"]["methods"]) == {
        "popularity", "recent_popularity", "plain_gbdt", "life_stage_prior", "als", "item_knn",
        "hybrid"}
    assert manifest["catalog_version"] == "tiny-1"
    assert set(manifest["files"]) == {"cf.joblib", "ids.joblib", "rates.joblib", "catalog.toml",
                                      "life_stages.toml"}


def test_current_points_to_the_newest_version(trained, models_dir, tiny_bank, tiny_catalog,
                                              tiny_catalog_toml, life_stages):
    first = trained.version
    second = train(tiny_bank, tiny_catalog, life_stages, TrainConfig(cf=CFConfig(factors=2)),
                   models_dir, tiny_catalog_toml, life_stages_text()[0],
                   run_evaluation=False).version
    assert second != first and sorted([first, second]) == [first, second]
    assert (models_dir / "current").is_symlink()
    assert os.readlink(models_dir / "current") == second
    assert artifacts.load(models_dir).version == second
    assert artifacts.load(models_dir, first).version == first  # older versions stay loadable
    artifacts.set_current(models_dir, first)  # roll back
    assert artifacts.load(models_dir).version == first
    # only whole versions and the link are left in the folder
    assert sorted(os.listdir(models_dir)) == sorted([first, second, "current"])


def test_save_without_make_current_leaves_current_alone(trained, models_dir):
    other = artifacts.save(trained, models_dir, {"version": "manual-1", "data": {}},
                           make_current=False)
    assert other.name == "manual-1" and (other / "manifest.json").is_file()
    assert os.readlink(models_dir / "current") != "manual-1"


def test_existing_version_is_not_overwritten(trained, models_dir):
    with pytest.raises(ArtifactError, match="already exists"):
        artifacts.save(trained, models_dir, {"version": trained.version, "data": {}})


def test_set_current_to_an_unknown_version_is_refused(trained, models_dir):
    with pytest.raises(ArtifactError, match="no model version 'v404'"):
        artifacts.set_current(models_dir, "v404")
    assert os.readlink(models_dir / "current") == trained.version


@pytest.mark.parametrize("name", ["cf.joblib", "ids.joblib", "rates.joblib", "catalog.toml",
                                  "life_stages.toml"])
def test_corrupted_file_fails_the_checksum(trained, models_dir, name):
    """One flipped byte in any stored file and the version is refused, before joblib runs."""
    path = models_dir / trained.version / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=f"{name} does not match its checksum"):
        artifacts.load(models_dir)


def test_missing_file_is_refused(trained, models_dir):
    (models_dir / trained.version / "rates.joblib").unlink()
    with pytest.raises(ArtifactError, match="rates.joblib is missing"):
        artifacts.load(models_dir)


def test_missing_manifest_is_refused(trained, models_dir):
    (models_dir / trained.version / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json not found"):
        artifacts.load(models_dir, trained.version)


def test_unreadable_or_foreign_manifest_is_refused(trained, models_dir):
    manifest_path = models_dir / trained.version / "manifest.json"
    manifest = json.loads(manifest_path.read_text("utf-8"))
    manifest_path.write_text(json.dumps({**manifest, "format_version": 99}), "utf-8")
    with pytest.raises(ArtifactError, match="artifact format 99 is not supported"):
        artifacts.load(models_dir)
    manifest_path.write_text("{not json", "utf-8")
    with pytest.raises(ArtifactError, match="not readable JSON"):
        artifacts.load(models_dir)


def test_catalog_not_matching_the_model_is_refused(trained, models_dir, tiny_catalog_toml):
    """Even with consistent checksums, a catalog with other products cannot serve this model."""
    folder = models_dir / trained.version
    text = tiny_catalog_toml.replace('id = "equity_fund"', 'id = "bond_fund"')
    (folder / "catalog.toml").write_text(text, "utf-8")
    manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    manifest["files"]["catalog.toml"] = artifacts._sha256(folder / "catalog.toml")
    (folder / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(ArtifactError, match="stored catalog does not match"):
        artifacts.load(models_dir)


def test_no_model_yet(tmp_path):
    with pytest.raises(ArtifactError, match="run `nbo train` first"):
        artifacts.load(tmp_path)


@pytest.mark.parametrize("version", ["../x", "../models/../x", "x/..", "", "/etc"])
def test_version_outside_the_models_dir_is_refused(trained, models_dir, tmp_path, version):
    """A valid model folder next to (not inside) the models dir is never loaded."""
    shutil.copytree(models_dir / trained.version, tmp_path / "x")
    with pytest.raises(ArtifactError, match="is not a folder inside"):
        artifacts.load(models_dir, version)


def test_current_link_pointing_outside_is_refused(trained, models_dir, tmp_path):
    shutil.copytree(models_dir / trained.version, tmp_path / "elsewhere")
    (models_dir / "current").unlink()
    (models_dir / "current").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ArtifactError, match="is not a folder inside"):
        artifacts.load(models_dir)


def test_save_refuses_a_version_outside_the_models_dir(tiny_bank, tiny_catalog,
                                                       tiny_catalog_toml, life_stages, tmp_path):
    model = fit(tiny_bank, tiny_catalog, life_stages, TrainConfig(), tiny_catalog_toml,
                life_stages_text()[0])
    models_dir = tmp_path / "models"
    try:
        with pytest.raises(ArtifactError):
            artifacts.save(model, models_dir, {"version": "./../escaped", "data": {}},
                           make_current=False)
    finally:
        assert not (tmp_path / "escaped").exists()
