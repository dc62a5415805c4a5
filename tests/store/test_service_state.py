"""What the service remembers, through the HTTP API: recorded responses and the decision log.

A small demo bank is trained once for the module with ``training.train``; every test gets
its own ``STATE_DIR`` (the decision log's key, and the stores' database ``nbo.db``: responses
and decision log) in a temporary folder, so tests never see each other's responses. The
service decides with the wall clock (it is the service's own ``datetime.now``), so the tests
choose their customers by asking the service.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from api import create_app
from recommender.cli import main
from recommender.data import columns as C
from recommender.data.catalog import catalog_text, load_catalog
from recommender.data.demo import generate
from recommender.data.extracts import BankData, load_bank, write_bank
from recommender.data.life_stages import life_stages_text, load_life_stages
from recommender.policy.offers import decided
from recommender.ranking.config import TrainConfig
from recommender.ranking.training import train
from recommender.service import load_service
from recommender.store.decision_key import load_or_create_key
from recommender.store.decisions import DecisionLog, DecisionLogError
from recommender.store.replay import agree, replay

pytestmark = pytest.mark.numerics  # compares numbers two code paths compute

ERROR_KEYS = {"code", "message", "details"}
RECORD_KEYS = {"id", "customer_id", "product_id", "outcome", "channel", "recorded_at"}
DECISION_ID = re.compile(r"[0-9a-f]{32}")
CJK = re.compile(r"[\u4e00-\u9fff]")
CATALOG = load_catalog()


@dataclass(frozen=True)
class Trained:
    data_dir: Path
    models_dir: Path
    bank: BankData


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """A demo bank of 2,000 customers over 4 months, and a hybrid model trained on it."""
    root = tmp_path_factory.mktemp("service_state")
    stages = load_life_stages()
    (cat_text, _), (st_text, _) = catalog_text(), life_stages_text()
    demo = generate(2000, 4, 29, CATALOG, stages)
    write_bank(BankData(demo.customers, demo.holdings), root / "data")
    bank = load_bank(root / "data", CATALOG)
    train(bank, CATALOG, stages, TrainConfig(ranker="hybrid"), root / "models", cat_text,
          st_text, run_evaluation=False)
    return Trained(root / "data", root / "models", bank)


def _app(trained: Trained, state: Path, **config):
    return create_app({"DATA_DIR": str(trained.data_dir), "MODELS_DIR": str(trained.models_dir),
                       "STATE_DIR": str(state), **config})


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def app(trained, state):
    return _app(trained, state)


@pytest.fixture
def client(app, client_with_key):
    return client_with_key(app)


@pytest.fixture(scope="module")
def chosen(trained, tmp_path_factory, client_with_key) -> dict[str, list[str]]:
    """Customers by kind, chosen by asking the service: ``offered`` get at least three offers
    on the branch channel (consenting, no complaint); ``no_consent`` and ``complaint``."""
    client = client_with_key(_app(trained, tmp_path_factory.mktemp("choose")))
    customers = trained.bank.customers
    plain = customers[customers[C.CONSENT_PROFILING] & ~customers[C.OPEN_COMPLAINT]
                      & ~customers[C.VULNERABLE]]
    offered = []
    for customer_id in plain[C.CUSTOMER_ID]:
        if len(_json(client.get(f"/v1/customers/{customer_id}/offers"))["offers"]) >= 3:
            offered.append(customer_id)
        if len(offered) == 8:
            break
    no_consent = customers.loc[~customers[C.CONSENT_PROFILING] & ~customers[C.OPEN_COMPLAINT],
                               C.CUSTOMER_ID].head(2).tolist()
    complaint = customers.loc[customers[C.OPEN_COMPLAINT], C.CUSTOMER_ID].head(1).tolist()
    assert len(offered) == 8 and len(no_consent) == 2 and len(complaint) == 1
    return {"offered": offered, "no_consent": no_consent, "complaint": complaint}


# --------------------------------------------------------------------------- helpers


def _reject_constant(name: str):
    raise AssertionError(f"the response is not strict JSON: it contains {name}")


def _json(resp) -> dict | list:
    assert resp.mimetype == "application/json", resp.get_data(as_text=True)[:300]
    return json.loads(resp.get_data(as_text=True), parse_constant=_reject_constant)


def _assert_error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:500])
    body = _json(resp)
    assert set(body) == ERROR_KEYS and body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], dict)
    return body


def _post(client, customer_id: str, product_id: str, outcome: str, channel: str = "branch"):
    return client.post(f"/v1/customers/{customer_id}/responses",
                       json={"product_id": product_id, "outcome": outcome, "channel": channel})


def _offers(client, customer_id: str, query: str = "") -> dict:
    resp = client.get(f"/v1/customers/{customer_id}/offers{query}")
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    return _json(resp)


def _offer_ids(body: dict) -> list[str]:
    return [o["product_id"] for o in body["offers"]]


def _responses(client, customer_id: str) -> list[dict]:
    resp = client.get(f"/v1/customers/{customer_id}/responses")
    assert resp.status_code == 200
    body = _json(resp)
    assert body["customer_id"] == customer_id
    return body["responses"]


def _decision_log(state: Path) -> DecisionLog:
    """The log the app of ``state`` writes: in the state folder's database, ``nbo.db``."""
    return DecisionLog(state / "nbo.db", load_or_create_key(state / "decision.key"))


# --------------------------------------------------------------------------- responses


def test_a_recorded_response_is_returned_as_stored(client, chosen):
    customer = chosen["offered"][0]
    before = datetime.now(UTC)
    resp = _post(client, customer, "credit_card", "shown", "mobile")
    assert resp.status_code == 201
    record = _json(resp)
    assert set(record) == RECORD_KEYS
    assert record["customer_id"] == customer and record["product_id"] == "credit_card"
    assert (record["outcome"], record["channel"]) == ("shown", "mobile")
    assert isinstance(record["id"], int) and record["id"] >= 1
    assert record["recorded_at"].endswith("Z")
    at = datetime.fromisoformat(record["recorded_at"].replace("Z", "+00:00"))
    assert before - timedelta(seconds=1) <= at <= datetime.now(UTC) + timedelta(seconds=1)
    second = _json(_post(client, customer, "mortgage", "declined"))
    assert second["id"] > record["id"]
    assert _responses(client, customer) == [second, record]  # newest first


INVALID_BODIES = {
    "bad outcome": ({"product_id": "credit_card", "outcome": "maybe", "channel": "branch"},
                    400, "invalid_response", "outcome"),
    "bad channel": ({"product_id": "credit_card", "outcome": "shown", "channel": "fax"},
                    400, "invalid_response", "channel"),
    "unknown product": ({"product_id": "yacht", "outcome": "shown", "channel": "branch"},
                        400, "invalid_response", "product_id"),
    "empty product": ({"product_id": " ", "outcome": "shown", "channel": "branch"},
                      400, "invalid_response", "product_id"),
    "missing channel": ({"product_id": "credit_card", "outcome": "shown"},
                        400, "bad_request", "channel"),
    "missing everything": ({}, 400, "bad_request", "product_id"),
    "unknown field": ({"product_id": "credit_card", "outcome": "shown", "channel": "branch",
                       "note": "x"}, 400, "bad_request", "note"),
    "number outcome": ({"product_id": "credit_card", "outcome": 1, "channel": "branch"},
                       400, "bad_request", "strings"),
    "not an object": (["credit_card", "shown", "branch"], 400, "bad_request", "JSON object"),
}


@pytest.mark.parametrize("body, status, code, named", INVALID_BODIES.values(),
                         ids=INVALID_BODIES.keys())
def test_invalid_response_bodies_are_refused_and_nothing_is_stored(app, client, chosen, body,
                                                                   status, code, named):
    customer = chosen["offered"][0]
    resp = client.post(f"/v1/customers/{customer}/responses", json=body)
    error = _assert_error(resp, status, code)
    assert named in error["message"]
    assert _responses(client, customer) == []
    assert app.extensions["nbo"].responses.count() == 0


def test_missing_fields_are_listed_in_the_details(client, chosen):
    resp = client.post(f"/v1/customers/{chosen['offered'][0]}/responses",
                       json={"outcome": "shown"})
    assert _assert_error(resp, 400, "bad_request")["details"] == {
        "fields": ["product_id", "channel"]}


def test_a_body_that_is_not_json_is_refused(client, chosen):
    resp = client.post(f"/v1/customers/{chosen['offered'][0]}/responses", data="outcome=shown",
                       content_type="application/x-www-form-urlencoded")
    _assert_error(resp, 400, "bad_request")


def test_responses_of_an_unknown_customer_are_404(app, client):
    _assert_error(_post(client, "NOBODY", "credit_card", "shown"), 404, "unknown_customer")
    _assert_error(client.get("/v1/customers/NOBODY/responses"), 404, "unknown_customer")
    assert app.extensions["nbo"].responses.count() == 0


# --------------------------------------------------------------------------- contact policy


def test_a_declined_product_disappears_and_why_not_says_so_in_both_languages(client, chosen):
    customer = chosen["offered"][1]
    first = _offers(client, customer)
    product = first["offers"][0]
    assert _post(client, customer, product["product_id"], "declined", "branch").status_code == 201
    after = _offers(client, customer)
    assert product["product_id"] not in _offer_ids(after)
    # the others keep their order
    assert _offer_ids(after)[:len(first["offers"]) - 1] == _offer_ids(first)[1:]
    url = f"/v1/customers/{customer}/offers/{product['product_id']}/why-not"
    for lang in ("en", "zh"):
        why = _json(client.get(f"{url}?lang={lang}"))
        assert why["offered"] is False and why["rank"] is None
        assert [r["code"] for r in why["rules"]] == ["declined_recently"]
        rule = why["rules"][0]
        assert rule["text_en"] == (f"You declined {product['name_en']} recently; we will not "
                                   "offer it again yet.")
        assert rule["text_zh"] == f"您近期已婉拒{product['name_zh']}，暂不再推荐。"
        assert rule["text"] == rule["text_zh" if lang == "zh" else "text_en"]
    # a product declined on another channel is not offered on any channel
    mobile = _offers(client, customer, "?channel=mobile")
    assert product["product_id"] not in _offer_ids(mobile)


def test_an_accepted_product_is_not_offered_again(client, chosen):
    customer = chosen["offered"][2]
    product = _offers(client, customer)["offers"][0]["product_id"]
    assert _post(client, customer, product, "accepted", "mobile").status_code == 201
    assert product not in _offer_ids(_offers(client, customer))
    why = _json(client.get(f"/v1/customers/{customer}/offers/{product}/why-not"))
    assert [r["code"] for r in why["rules"]] == ["accepted_pending"]


def test_shows_recorded_today_use_up_the_channel_cap(client, chosen):
    customer = chosen["offered"][3]
    assert len(_offers(client, customer, "?channel=mobile&limit=5")["offers"]) == 3  # cap 3
    unrelated = ["time_deposit", "fx_service"]
    for product in unrelated:
        assert _post(client, customer, product, "shown", "mobile").status_code == 201
    assert len(_offers(client, customer, "?channel=mobile&limit=5")["offers"]) == 1
    assert _post(client, customer, "gold_savings", "shown", "mobile").status_code == 201
    capped = _offers(client, customer, "?channel=mobile")
    assert capped["offers"] == []
    assert [n["code"] for n in capped["notices"]] == ["channel_cap_reached"]
    assert len(_offers(client, customer, "?channel=branch")["offers"]) >= 3  # other channel


def test_responses_survive_a_restart(trained, state, client, chosen, client_with_key):
    customer = chosen["offered"][4]
    posted = [_json(_post(client, customer, p, o, ch)) for p, o, ch in
              [("credit_card", "shown", "branch"), ("mortgage", "declined", "email"),
               ("pension_account", "accepted", "call_center")]]
    decision_id = _offers(client, customer)["decision_id"]
    restarted = client_with_key(_app(trained, state))
    assert _responses(restarted, customer) == posted[::-1]
    assert "mortgage" not in _offer_ids(_offers(restarted, customer))
    with _decision_log(state) as log:
        assert log.get(decision_id).output["customer_id"] == customer


def test_concurrent_posts_from_eight_threads_lose_nothing(app, chosen, client_with_key):
    customers = chosen["offered"][:4]
    products = ["credit_card", "mortgage", "time_deposit", "bond_fund", "fx_service"]
    start = threading.Barrier(8)

    def worker(thread: int) -> list[tuple[int, dict]]:
        client = client_with_key(app)  # one client (and key) per thread
        start.wait()
        results = []
        for k in range(20):
            resp = _post(client, customers[thread % 4], products[k % 5],
                         ("shown", "declined", "accepted")[k % 3],
                         ("branch", "mobile", "call_center", "email")[thread % 4])
            results.append((resp.status_code, _json(resp)))
        return results

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = [r for future in [pool.submit(worker, t) for t in range(8)]
                   for r in future.result()]
    assert [status for status, _ in results] == [201] * 160
    ids = {record["id"] for _, record in results}
    assert len(ids) == 160
    assert app.extensions["nbo"].responses.count() == 160
    client = client_with_key(app)
    stored = [r for c in customers for r in _responses(client, c)]
    assert len(stored) == 160 and {r["id"] for r in stored} == ids
    assert sorted(stored, key=lambda r: r["id"]) == sorted((r for _, r in results),
                                                           key=lambda r: r["id"])


# --------------------------------------------------------------------------- decision log


QUERIES = ["", "?lang=zh", "?channel=mobile", "?intent=retention&limit=3",
           "?channel=call_center&intent=borrowing", "?limit=20"]


def test_every_decision_is_logged_and_replays_the_same(trained, state, client, chosen):
    served = []
    for query in QUERIES:
        served.append(_offers(client, chosen["offered"][5], query))
    for customer in chosen["no_consent"] + chosen["complaint"]:
        served.append(_offers(client, customer))
    customer = chosen["offered"][6]
    _post(client, customer, _offers(client, customer)["offers"][0]["product_id"], "declined")
    _post(client, customer, "mortgage", "shown")
    served.append(_offers(client, customer))
    assert any(s["source"] == "popularity" for s in served)
    assert any(s["notices"] and s["notices"][0]["code"] == "open_complaint" for s in served)
    ids = [s["decision_id"] for s in served]
    assert all(DECISION_ID.fullmatch(i) for i in ids) and len(set(ids)) == len(ids)
    with _decision_log(state) as log:
        for body in served:
            decision = log.get(body["decision_id"])
            assert decision.source == "api"
            result = replay(decision, trained.models_dir)
            assert result.same, body["decision_id"]
            assert decided(result.output["offers"]) == decision.output["offers"]
            assert decision.output == decided({k: v for k, v in body.items()
                                               if k != "decision_id"})  # no wording logged
            assert all(r["text_en"] for o in result.output["offers"] for r in o["reasons"])
            assert [o["product_id"] for o in result.output["offers"]] == _offer_ids(body)
            assert result.output["model_version"] == body["model_version"]
        assert log.count() == len(served) + 1  # and the one read before the decline


def test_queued_decisions_are_packed_and_replay_the_same(trained, state, client_with_key,
                                                         chosen):
    """As under ``nbo serve``: answers queued, written as one compressed pack on flush."""
    app = _app(trained, state, DECISION_FLUSH_SECONDS=60.0)  # nothing written before flush()
    client = client_with_key(app)
    served = [_offers(client, chosen["offered"][k], query) for k, query in enumerate(QUERIES)]
    with _decision_log(state) as log:
        assert log.count() == 0
        app.extensions["nbo"].decisions.flush()
        assert log.count() == len(served)
        for body in served:
            decision = log.get(body["decision_id"])
            assert decision.output == decided({k: v for k, v in body.items()
                                               if k != "decision_id"})
            assert replay(decision, trained.models_dir).same, body["decision_id"]


def test_replay_notices_a_decision_that_differs(trained, state, client, chosen):
    body = _offers(client, chosen["offered"][5])
    with _decision_log(state) as log:
        decision = log.get(body["decision_id"])
    edited = {**decision.output, "offers": decision.output["offers"][::-1]}
    assert len(edited["offers"]) > 1
    assert replay(decision, trained.models_dir).same
    assert not replay(replace(decision, output=edited), trained.models_dir).same


def test_a_decision_for_a_profile_in_the_request_replays_the_same(trained, state, client):
    profile = {"age": 31, "income": 180000, "marital_status": "married", "dependants": 1,
               "tenure_months": 24, "segment": "mass", "risk_grade": "C3",
               "residency": "resident", "consent_profiling": True}
    resp = client.post("/v1/offers/score", json={"customer": profile,
                                                 "holdings": ["current_account"]})
    body = _json(resp)
    assert resp.status_code == 200 and DECISION_ID.fullmatch(body["decision_id"])
    with _decision_log(state) as log:
        assert replay(log.get(body["decision_id"]), trained.models_dir).same


def _stored_bytes(state: Path) -> bytes:
    """Everything the database holds on disk: the file and its write-ahead log."""
    files = sorted(state.glob("nbo.db*"))
    assert files and files[0].name == "nbo.db"
    return b"".join(f.read_bytes() for f in files)


def test_the_decision_log_does_not_hold_the_customer_id_in_clear(state, client, chosen):
    customer = chosen["offered"][7]
    for query in ("", "?lang=zh", "?channel=email"):
        _offers(client, customer, query)
    stored = _stored_bytes(state)
    assert len(stored) > 0
    assert customer.encode() not in stored
    assert customer.encode("utf-16-le") not in stored
    # ... while a response, which is keyed by customer, does hold it: the check works
    _post(client, customer, "credit_card", "shown")
    assert customer.encode() in _stored_bytes(state)
    with _decision_log(state) as log:
        assert len(log.for_customer(customer)) == 3
        assert log.for_customer(customer)[0].output["customer_id"] == customer


def test_nbo_replay_prints_same_true(trained, state, client, chosen, capsys):
    body = _offers(client, chosen["offered"][5], "?intent=retention")
    capsys.readouterr()
    code = main(["replay", body["decision_id"], "--models", str(trained.models_dir),
                 "--state", str(state)])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert printed["same"] is True and printed["decision_id"] == body["decision_id"]
    assert printed["model_version"] == body["model_version"]
    assert printed["policy_version"] == body["policy_version"] == "policy-2026.1"
    assert agree(decided(printed["replayed"]["offers"]), printed["logged"]["offers"])
    assert [o["product_id"] for o in printed["replayed"]["offers"]] == _offer_ids(body)
    assert printed["replayed"]["offers"][0]["reasons"][0]["text_zh"]  # the wording, again


def test_nbo_replay_of_an_unknown_decision_fails_cleanly(trained, state, client, chosen):
    _offers(client, chosen["offered"][5])
    assert main(["replay", "0" * 32, "--models", str(trained.models_dir),
                 "--state", str(state)]) == 2


def test_a_log_whose_key_was_deleted_is_refused_not_rekeyed(trained, state, client, chosen):
    _offers(client, chosen["offered"][5])
    key = state / "decision.key"
    assert key.is_file() and (state / "nbo.db").is_file()
    key.unlink()
    with pytest.raises(DecisionLogError, match="key file .*decision.key is missing: restore it"):
        load_service(trained.data_dir, trained.models_dir, state_dir=state)
    assert not key.exists()  # no new key was made
    with pytest.raises(DecisionLogError, match="key"):
        _app(trained, state)
    assert not key.exists()
    assert main(["replay", "0" * 32, "--models", str(trained.models_dir),
                 "--state", str(state)]) == 2
    assert not key.exists()


def test_a_new_state_folder_gets_a_new_key_and_log(trained, tmp_path):
    fresh = tmp_path / "fresh"
    service = load_service(trained.data_dir, trained.models_dir, state_dir=fresh)
    assert (fresh / "decision.key").is_file() and (fresh / "nbo.db").is_file()
    assert sorted(p.name for p in fresh.glob("*.db")) == ["nbo.db"]  # one file for all stores
    assert service.decisions.count() == 0 and service.responses.count() == 0
    customer = str(pd.Series(trained.bank.customers[C.CUSTOMER_ID]).iloc[0])
    result = service.offers(customer)
    assert service.decisions.get(result["decision_id"]).output["customer_id"] == customer
