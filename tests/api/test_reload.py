"""Hot reload: a new `current` is served after POST /admin/reload in every worker; a missing,
corrupt or incompatible version is rejected and the previous model keeps serving."""

from __future__ import annotations

import json
import logging
import re
import shutil
import time

import pytest

from api import create_app, reload
from recommender.data.catalog import catalog_text
from recommender.data.extracts import load_bank
from recommender.data.life_stages import life_stages_text
from recommender.exceptions import ConfigError
from recommender.policy.offers import decided
from recommender.ranking import artifacts
from recommender.ranking.config import TrainConfig
from recommender.ranking.score_table import ServedScores
from recommender.ranking.training import train
from recommender.store.settings import SERVED_VERSION, read_setting

pytestmark = pytest.mark.numerics  # compares numbers two code paths compute


@pytest.fixture
def models(served_demo_bank, packaged_catalog, life_stages, tmp_path):
    """A models folder of our own with two versions; `current` is the first."""
    folder = tmp_path / "models"
    shutil.copytree(served_demo_bank["MODELS_DIR"], folder, symlinks=True)
    first = artifacts.resolve(folder).name
    bank = load_bank(served_demo_bank["DATA_DIR"], packaged_catalog)
    second = train(bank, packaged_catalog, life_stages, TrainConfig(ranker="hybrid"), folder,
                   catalog_text()[0], life_stages_text()[0], run_evaluation=False).version
    artifacts.set_current(folder, first)
    return folder, first, second


def _app(served_demo_bank, models, state):
    return create_app({"DATA_DIR": served_demo_bank["DATA_DIR"], "MODELS_DIR": str(models),
                       "STATE_DIR": str(state)})


def _version(client) -> str:
    return client.get("/v1/model").get_json()["version"]


def test_reload_serves_the_new_current_and_is_admin_only(served_demo_bank, models, tmp_path,
                                                         client_with_key):
    folder, first, second = models
    app = _app(served_demo_bank, folder, tmp_path / "state")
    admin, teller = client_with_key(app, "admin"), client_with_key(app, "teller")
    assert _version(admin) == first
    assert admin.post("/admin/reload").get_json()["status"] == "unchanged"
    artifacts.set_current(folder, second)
    assert teller.post("/admin/reload").status_code == 403
    assert _version(admin) == first  # nothing changes until asked
    body = admin.post("/admin/reload").get_json()
    assert body == {"status": "reloaded", "model_version": second, "previous_version": first}
    assert _version(admin) == second
    assert admin.get("/v1/customers/C00000001/offers").status_code == 200
    database = app.extensions["nbo"].responses.database
    assert read_setting(database, SERVED_VERSION) == second  # what a worker falls back on


def _corrupt(folder, version):
    path = folder / version / "cf.joblib"
    path.write_bytes(path.read_bytes()[:-100] + b"x" * 100)


def _incompatible(folder, version):
    manifest = folder / version / "manifest.json"
    data = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**data, "format_version": 999}))


def _missing(folder, version):
    shutil.rmtree(folder / version)


@pytest.mark.parametrize("damage, reason", [(_corrupt, "checksum|cannot load"),
                                            (_incompatible, "format 999"),
                                            (_missing, "no model|not found")])
def test_a_bad_version_is_rejected_and_the_old_one_keeps_serving(
        served_demo_bank, models, tmp_path, client_with_key, caplog, damage, reason):
    folder, first, second = models
    app = _app(served_demo_bank, folder, tmp_path / "state")
    admin = client_with_key(app, "admin")
    artifacts.set_current(folder, second)
    damage(folder, second)
    with caplog.at_level(logging.ERROR, logger="api.reload"):
        response = admin.post("/admin/reload")
    assert response.status_code == 409
    assert response.get_json()["code"] == "reload_rejected"
    assert first in response.get_json()["message"]
    assert any("reload rejected" in r.getMessage() for r in caplog.records)
    assert re.search(reason, caplog.text)
    assert _version(admin) == first
    assert admin.get("/v1/customers/C00000001/offers").status_code == 200


def test_other_workers_follow_a_reload(served_demo_bank, models, tmp_path, client_with_key,
                                       monkeypatch):
    """Two apps on one state folder stand for two gunicorn workers."""
    monkeypatch.setattr(reload, "_CHECK_EVERY_S", 0.0)
    folder, first, second = models
    one = client_with_key(_app(served_demo_bank, folder, tmp_path / "state"), "admin")
    other = client_with_key(_app(served_demo_bank, folder, tmp_path / "state"), "admin")
    artifacts.set_current(folder, second)
    assert one.post("/admin/reload").get_json()["status"] == "reloaded"
    deadline = time.monotonic() + 10
    while _version(other) != second and time.monotonic() < deadline:
        time.sleep(0.05)  # the other worker reloads in the background, serving meanwhile
    assert _version(other) == second


def test_sighup_style_request_reloads_every_worker(served_demo_bank, models, tmp_path,
                                                   client_with_key, monkeypatch):
    monkeypatch.setattr(reload, "_CHECK_EVERY_S", 0.0)
    folder, first, second = models
    client = client_with_key(_app(served_demo_bank, folder, tmp_path / "state"), "admin")
    artifacts.set_current(folder, second)
    reload.request_reload(tmp_path / "state")  # what SIGHUP to the master does
    deadline = time.monotonic() + 10
    while _version(client) != second and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _version(client) == second


def test_a_worker_starting_on_a_broken_current_serves_the_last_good_version(
        served_demo_bank, models, tmp_path, caplog):
    folder, first, second = models
    state = tmp_path / "state"
    served = _app(served_demo_bank, folder, state)  # serves first, remembers it
    assert read_setting(served.extensions["nbo"].responses.database, SERVED_VERSION) == first
    _corrupt(folder, second)
    artifacts.set_current(folder, second)
    with caplog.at_level(logging.ERROR, logger="api.reload"):
        app = _app(served_demo_bank, folder, state)
    assert app.extensions["nbo"].engine.model.version == first
    assert "serving the last good version" in caplog.text
    with pytest.raises(artifacts.ArtifactError):  # nothing good to fall back on
        _app(served_demo_bank, folder, tmp_path / "fresh-state")


def _wait_for_table(app, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while app.extensions["nbo"].scores.at(0) is None:
        assert time.monotonic() < deadline, "the score table was never built"
        time.sleep(0.1)


def test_a_reloaded_model_gets_its_score_table_built_in_the_background(
        served_demo_bank, models, packaged_catalog, life_stages, tmp_path, client_with_key,
        monkeypatch):
    folder, first, _ = models
    bank = load_bank(served_demo_bank["DATA_DIR"], packaged_catalog)
    second = train(bank, packaged_catalog, life_stages,  # other scores, so another table
                   TrainConfig(ranker="hybrid", cf_weight=0.5), folder, catalog_text()[0],
                   life_stages_text()[0], run_evaluation=False).version
    artifacts.set_current(folder, first)
    monkeypatch.setattr(ServedScores, "RECHECK_SECONDS", 0.0)
    app = create_app({"DATA_DIR": served_demo_bank["DATA_DIR"], "MODELS_DIR": str(folder),
                      "STATE_DIR": str(tmp_path / "state"), "SCORE_TABLES": "background",
                      "DECISION_FLUSH_SECONDS": "0.05"})
    admin = client_with_key(app, "admin")
    _wait_for_table(app)
    first_table = app.extensions["nbo"].scores.folder
    artifacts.set_current(folder, second)
    assert admin.post("/admin/reload").get_json()["status"] == "reloaded"
    scores = app.extensions["nbo"].scores
    assert scores.mode == "background" and scores.folder != first_table  # a model of its own
    assert admin.get("/v1/customers/C00000001/offers").status_code == 200  # live meanwhile
    _wait_for_table(app)
    answer = admin.get("/v1/customers/C00000001/offers").get_json()
    assert answer["model_version"] == second
    assert app.extensions["nbo"].decisions.get(answer["decision_id"]).output["offers"] == \
        decided(answer["offers"])  # queued, and written by the read


def test_a_bad_decision_flush_setting_is_refused_naming_it(served_demo_bank, tmp_path):
    with pytest.raises(ConfigError, match="DECISION_FLUSH_SECONDS.*'soon'"):
        create_app({**served_demo_bank, "STATE_DIR": str(tmp_path / "state"),
                    "DECISION_FLUSH_SECONDS": "soon"})
