"""Precomputed ranker scores: the same answers as scoring live, for a fraction of the cost."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime

import numpy as np
import pytest

from recommender.data.mapped_book import open_book
from recommender.exceptions import ArtifactError, ConfigError
from recommender.ranking import artifacts
from recommender.ranking.ranker import served_ranker
from recommender.ranking.score_table import (
    ScoreTable,
    ServedScores,
    build_in_child,
    build_score_table,
    open_table,
    table_folder,
    table_key,
)
from recommender.service import load_service, smoke_test
from recommender.store.replay import agree

from tolerance import assert_close

pytestmark = pytest.mark.numerics  # compares numbers two code paths compute


@pytest.fixture(scope="module")
def model(served_demo_bank):
    return artifacts.load(served_demo_bank["MODELS_DIR"])


@pytest.fixture(scope="module")
def built(served_demo_bank, model, tmp_path_factory):
    """A state folder whose book has its score table, built by the child process."""
    state = tmp_path_factory.mktemp("score_state")
    build_in_child(served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"],
                   artifacts.CURRENT, state)
    return state


def test_the_table_holds_the_served_rankers_scores_for_every_customer(
        served_demo_bank, model, built):
    book = open_book(served_demo_bank["DATA_DIR"], model, built / "book-cache")
    table = open_table(built, book, model)
    assert table is not None and table.scores.shape == (len(book), len(model.catalog))
    live = served_ranker(model).score(book.batch(np.arange(len(book))))
    assert_close(table.scores, live.scores)
    for position in (0, 17, len(book) - 1):
        row = table.at(position)
        assert row.sources.tolist() == [live.sources[position]]
        one = served_ranker(model).score(book.batch(np.array([position])))
        assert_close(row.scores, one.scores)


def test_chunks_do_not_change_the_scores(served_demo_bank, model, built, tmp_path):
    book = open_book(served_demo_bank["DATA_DIR"], model, built / "book-cache")
    chunked = ScoreTable(build_score_table(model, book, tmp_path / "t", chunk=100), book)
    whole = open_table(built, book, model)
    assert_close(chunked.scores, whole.scores)
    assert np.array_equal(chunked.sources, whole.sources)


def _without_ids(answer: dict) -> dict:
    return {k: v for k, v in answer.items() if k != "decision_id"}


def test_answers_from_the_table_equal_live_answers(served_demo_bank, built, tmp_path):
    data, models = served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"]
    shutil.copytree(built, tmp_path / "state")  # the same book and table, a log of its own
    tabled = load_service(data, models, state_dir=tmp_path / "state")
    live = load_service(data, models, state_dir=tmp_path / "state", score_tables="off")
    assert tabled.scores.table is not None and live.scores.table is None
    customers = [str(c) for c in tabled.book.batch(np.arange(0, 1500, 37)).customer_ids]
    tabled.record_response(customers[0], "credit_card", "declined", "mobile")  # history too
    at = datetime.now(UTC)
    for i, customer in enumerate(customers):
        channel, lang = ("mobile", "zh") if i % 2 else ("branch", "en")
        a = tabled.offers(customer, limit=3 + i % 3, lang=lang, channel=channel)
        b = live.offers(customer, limit=3 + i % 3, lang=lang, channel=channel)
        assert agree(_without_ids(a), _without_ids(b)), customer
        product = a["offers"][0]["product_id"] if a["offers"] else "credit_card"
        assert agree(tabled.why_not(customer, product), live.why_not(customer, product))
    recorded = tabled.decisions.for_customer(customers[1], limit=2)
    assert recorded[0].inputs == recorded[1].inputs | {"context": recorded[0].inputs["context"]}
    assert datetime.fromisoformat(recorded[0].inputs["context"]["at"]) >= at


def test_a_copy_of_the_model_under_another_name_reuses_the_table(served_demo_bank, model,
                                                                 built, tmp_path):
    models = tmp_path / "models"
    source = artifacts.resolve(served_demo_bank["MODELS_DIR"])
    shutil.copytree(source, models / "renamed")
    manifest = json.loads((models / "renamed" / "manifest.json").read_text(encoding="utf-8"))
    (models / "renamed" / "manifest.json").write_text(
        json.dumps({**manifest, "version": "renamed"}), encoding="utf-8")
    renamed = artifacts.load(models, "renamed")
    book = open_book(served_demo_bank["DATA_DIR"], model, built / "book-cache")
    assert table_key(book, renamed) == table_key(book, model)
    changed = {**manifest, "parameters": {**manifest.get("parameters", {}), "cf_weight": 9}}
    renamed.manifest.update(changed)
    assert table_key(book, renamed) != table_key(book, model)  # other parameters: other scores


def test_a_table_that_disagrees_with_its_model_is_dropped_by_the_smoke_test(
        served_demo_bank, built, tmp_path, caplog):
    shutil.copytree(built, tmp_path / "state")
    service = load_service(served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"],
                           state_dir=tmp_path / "state")
    smoke_test(service)  # the true table passes
    scores = service.scores.table.folder / "scores.npy"
    damaged = np.load(scores)
    damaged[:5] += 1.0
    np.save(scores, damaged)
    service = load_service(served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"],
                           state_dir=tmp_path / "state")
    assert service.scores.table is not None
    smoke_test(service)  # answers stay right: scored live, and the error is logged
    assert service.scores.table is None and service.scores.at(0) is None
    assert service.scores.mode == "use"  # a reload to another model may use its own table
    assert "disagree with model" in caplog.text and "scoring live" in caplog.text


def test_a_table_of_another_book_is_refused_and_answers_are_scored_live(
        served_demo_bank, model, built, tmp_path, caplog):
    book = open_book(served_demo_bank["DATA_DIR"], model, built / "book-cache")
    state = shutil.copytree(built, tmp_path / "state")
    folder = table_folder(state, book, model)
    meta = json.loads((folder / "scores.json").read_text(encoding="utf-8"))
    (folder / "scores.json").write_text(json.dumps({**meta, "customers": 3}), encoding="utf-8")
    with pytest.raises(ArtifactError, match="another format or book"):
        ScoreTable(folder, book)
    service = load_service(served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"],
                           state_dir=state)  # a broken cache never stops the service
    assert service.scores.table is None and "another format or book" in caplog.text
    assert service.offers(str(service.book.batch(np.array([0])).customer_ids[0]))["offers"]


def test_in_background_mode_a_missing_table_is_built_while_answers_score_live(
        served_demo_bank, model, tmp_path, monkeypatch):
    data, models = served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"]
    book = open_book(data, model, tmp_path / "book-cache")
    monkeypatch.setattr(ServedScores, "RECHECK_SECONDS", 0.0)
    scores = ServedScores("background", tmp_path, book, model, data_dir=data, models_dir=models)
    assert scores.table is None
    scores.build_missing()
    deadline = time.monotonic() + 120
    while scores.at(3) is None:  # live scoring meanwhile
        assert time.monotonic() < deadline, "the background build never finished"
        time.sleep(0.1)
    assert scores.table is not None
    assert np.array_equal(scores.at(3).scores, scores.table.scores[3:4])
    assert ServedScores("off", tmp_path, book, model).at(3) is None
    with pytest.raises(ConfigError, match="score table mode"):
        ServedScores("sometimes", tmp_path, book, model)
