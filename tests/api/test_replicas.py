"""Several replicas, one PostgreSQL: real ``nbo serve`` processes, called over HTTP.

Two replicas share the session's PostgreSQL server (a database of this module's own) and the
same ``decision.key``: what one records, the other sees at its very next request (declines,
the daily caps), no response is lost or doubled under concurrent writes to both, and the
decisions either wrote replay. Then the faults, each on a PostgreSQL server of its own, since
they stop it: the server going away under load, and a service started while it is away.

The service decides with the wall clock, so the customers are chosen by asking it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import pytest
import sqlalchemy as sa
from postgres_server import PostgresServer
from replicas import Answer, Replica, child_env, create_key, nbo, serving, wait_until

from recommender.data import columns as C
from recommender.store.database import Database
from recommender.store.decision_key import load_or_create_key
from recommender.store.decisions import DecisionLogError
from recommender.store.tables import decisions as DECISIONS
from recommender.store.tables import responses as RESPONSES

STORE_FAILS_WITHIN_S = 2.0  # a request needing an absent database fails this fast at most
RECOVERS_WITHIN_S = 15.0
OUTAGE_S = 2.0  # longer than the key store's second between reads of the keys
MOBILE_CAP = 3  # recommender/data/policy.toml [contact.daily_caps]


@dataclass(frozen=True)
class Pair:
    a: Replica
    b: Replica
    url: str
    mobile_key: str  # offers and responses
    teller_key: str  # and why-not
    admin_key: str


@pytest.fixture(scope="module")
def pair(postgres_server, served_demo_bank, tmp_path_factory) -> Pair:
    """Two replicas of one service on a new database of the session's PostgreSQL server."""
    root = tmp_path_factory.mktemp("replicas")
    url = postgres_server.create_database()
    nbo("db", "upgrade", "--database", url, "--state", str(root / "cli"))
    keys = {role: create_key(url, role, root / "cli") for role in ("admin", "mobile", "teller")}
    a = Replica(served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"], root / "a", url)
    b = Replica(served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"], root / "b", url)
    load_or_create_key(a.state / "decision.key")  # one key for both, as an operator copies it
    b.state.mkdir(parents=True)
    shutil.copy2(a.state / "decision.key", b.state / "decision.key")
    with serving(a, b):
        yield Pair(a, b, url, keys["mobile"], keys["teller"], keys["admin"])
    for replica in (a, b):
        assert "unhandled" not in replica.log_text(), replica.log_tail()


def _ok(answer: Answer, status: int, *replicas: Replica) -> dict:
    """The body of ``answer``, which must have ``status`` (else the servers' logs' ends)."""
    if answer.status != status:
        tails = "\n".join(r.log_tail(15) for r in replicas)
        raise AssertionError(f"answered {answer.status}, not {status}: {answer.body}\n{tails}")
    return answer.body


def _offers(replica: Replica, key: str, customer: str, channel: str = "branch") -> dict:
    answer = replica.call("GET", f"/v1/customers/{customer}/offers?channel={channel}&limit=5",
                          key)
    return _ok(answer, 200, replica)


def _ids(body: dict) -> list[str]:
    return [offer["product_id"] for offer in body["offers"]]


def _respond(replica: Replica, key: str, customer: str, product: str, outcome: str,
             channel: str, timeout: float = 10.0) -> Answer:
    return replica.call("POST", f"/v1/customers/{customer}/responses", key,
                        {"product_id": product, "outcome": outcome, "channel": channel},
                        timeout=timeout)


def _plain_customers(demo_bank) -> list[str]:
    """Customers the contact policy alone decides for: consenting, no complaint, not
    vulnerable."""
    c = demo_bank.customers
    plain = c[c[C.CONSENT_PROFILING] & ~c[C.OPEN_COMPLAINT] & ~c[C.VULNERABLE]]
    return plain[C.CUSTOMER_ID].astype(str).tolist()


@pytest.fixture(scope="module")
def chosen(pair, demo_bank) -> list[str]:
    """Four customers offered the whole mobile cap (3) and at least 3 products at a branch."""
    found = []
    for customer in _plain_customers(demo_bank):
        if (len(_offers(pair.a, pair.mobile_key, customer, "mobile")["offers"]) == MOBILE_CAP
                and len(_offers(pair.a, pair.mobile_key, customer)["offers"]) >= 3):
            found.append(customer)
        if len(found) == 4:
            return found
    raise AssertionError(f"only {len(found)} customers of the demo bank get 3 offers")


def _stored(url: str, where=None) -> list[dict]:
    """Responses in the database, as the API shows them (``recorded_at`` ISO UTC with Z;
    not what was predicted for them, which the API does not show)."""
    database = Database(url)
    try:
        with database.connect() as conn:
            query = sa.select(*(RESPONSES.c[name] for name in (
                "id", "customer_id", "product_id", "outcome", "channel", "recorded_at")))
            rows = conn.execute(query if where is None else query.where(where)).mappings().all()
    finally:
        database.dispose()
    return [{**row, "recorded_at": row["recorded_at"].astimezone(UTC)
             .strftime("%Y-%m-%dT%H:%M:%S.%fZ")} for row in rows]


# ------------------------------------------------------------------- one source of truth


@pytest.mark.parametrize("order", ["a_then_b", "b_then_a"])
def test_a_decline_on_one_replica_removes_the_offer_on_the_other_at_once(pair, chosen, order):
    first, second = (pair.a, pair.b) if order == "a_then_b" else (pair.b, pair.a)
    customer = chosen[0] if order == "a_then_b" else chosen[1]
    before = _ids(_offers(second, pair.mobile_key, customer))
    declined = before[0]
    stored = _ok(_respond(first, pair.mobile_key, customer, declined, "declined", "branch"),
                 201, first)
    assert (stored["customer_id"], stored["product_id"], stored["outcome"]) == (
        customer, declined, "declined")
    after = _ids(_offers(second, pair.mobile_key, customer))  # the very next request
    assert declined not in after
    assert after[:len(before) - 1] == before[1:]  # the others keep their order
    why = _ok(second.call("GET", f"/v1/customers/{customer}/offers/{declined}/why-not",
                          pair.teller_key), 200, second)
    assert why["offered"] is False
    assert [rule["code"] for rule in why["rules"]] == ["declined_recently"]
    assert declined not in _ids(_offers(first, pair.mobile_key, customer))
    listed = _ok(second.call("GET", f"/v1/customers/{customer}/responses", pair.admin_key),
                 200, second)
    assert [r["id"] for r in listed["responses"]] == [stored["id"]]


def test_daily_caps_count_the_shows_recorded_on_both_replicas(pair, chosen):
    customer = chosen[2]
    shown = _ids(_offers(pair.a, pair.mobile_key, customer, "mobile"))
    assert len(shown) == MOBILE_CAP
    for product in shown[:2]:
        _ok(_respond(pair.a, pair.mobile_key, customer, product, "shown", "mobile"), 201, pair.a)
    assert len(_offers(pair.b, pair.mobile_key, customer, "mobile")["offers"]) == 1  # 3 - 2
    _ok(_respond(pair.b, pair.mobile_key, customer, shown[2], "shown", "mobile"), 201, pair.b)
    for replica in (pair.a, pair.b):
        capped = _offers(replica, pair.mobile_key, customer, "mobile")
        assert capped["offers"] == []
        assert [notice["code"] for notice in capped["notices"]] == ["channel_cap_reached"]
    # the cap is per channel: the shows on mobile leave the branch's five
    assert len(_offers(pair.b, pair.mobile_key, customer, "branch")["offers"]) >= 3


def test_concurrent_responses_on_both_replicas_are_all_stored_once(pair, chosen, demo_bank,
                                                                   packaged_catalog):
    threads_per_replica, per_thread = 8, 50
    total = 2 * threads_per_replica * per_thread
    customers = [c for c in demo_bank.customers[C.CUSTOMER_ID].astype(str)
                 if c not in chosen][-total:]
    products = [str(p) for p in packaged_catalog.ids.external_ids]
    outcomes, channels = ("shown", "accepted", "declined"), ("branch", "mobile", "call_center",
                                                             "email")
    asked = [(customers[i], products[i % len(products)], outcomes[i % 3], channels[i % 4])
             for i in range(total)]

    def send(replica: Replica, first: int) -> list[Answer]:
        return [_respond(replica, pair.mobile_key, *asked[i], timeout=30)
                for i in range(first, first + per_thread)]

    with ThreadPoolExecutor(2 * threads_per_replica) as pool:
        runs = [pool.submit(send, (pair.a, pair.b)[t % 2], t * per_thread)
                for t in range(2 * threads_per_replica)]
        answers = [answer for run in runs for answer in run.result()]

    assert [a.status for a in answers] == [201] * total, {
        a.status: a.body for a in answers if a.status != 201}
    bodies = [a.body for a in answers]
    assert [(b["customer_id"], b["product_id"], b["outcome"], b["channel"])
            for b in bodies] == asked
    ids = [b["id"] for b in bodies]
    assert len(set(ids)) == total
    by_a = [i for t in range(0, 2 * threads_per_replica, 2)
            for i in ids[t * per_thread:(t + 1) * per_thread]]
    by_b = sorted(set(ids) - set(by_a))
    assert min(by_a) < max(by_b) and min(by_b) < max(by_a)  # the replicas wrote together
    stored = _stored(pair.url, RESPONSES.c.customer_id.in_(customers))
    assert len(stored) == total  # nothing doubled
    assert sorted(stored, key=lambda r: r["id"]) == sorted(bodies, key=lambda b: b["id"])


def test_the_decisions_of_both_replicas_replay_the_same(pair, chosen):
    answers = [_offers(pair.a, pair.mobile_key, chosen[3], "mobile"),
               _offers(pair.b, pair.mobile_key, chosen[3], "branch")]
    for answer in answers:
        assert re.fullmatch(r"[0-9a-f]{32}", answer["decision_id"]), answer
        _wait_logged(pair, answer["decision_id"])
    replays = [subprocess.Popen(
        [sys.executable, "-m", "recommender.cli", "replay", answer["decision_id"], "--models",
         str(pair.a.models), "--state", str(pair.a.state), "--database", pair.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
        for answer in answers]
    for answer, replay in zip(answers, replays, strict=True):
        out, err = replay.communicate(timeout=120)
        assert replay.returncode == 0, f"{out}\n{err}"
        printed = json.loads(out)
        assert printed["same"] is True and printed["decision_id"] == answer["decision_id"]
        assert [o["product_id"] for o in printed["replayed"]["offers"]] == _ids(answer)


def _wait_logged(pair: Pair, decision_id: str) -> None:
    """The decision log is written in packs every 0.1 s: wait until this one is there."""
    from recommender.service import open_decision_log

    database = Database(pair.url)
    try:
        with open_decision_log(pair.a.state, database=database) as decisions:
            def logged() -> bool:
                try:
                    decisions.get(decision_id)
                except DecisionLogError:
                    return False
                return True

            wait_until(logged, 10, f"decision {decision_id} in the log")
    finally:
        database.dispose()


def _decision_ids(url: str) -> set[str]:
    database = Database(url)
    try:
        with database.connect() as conn:
            return set(conn.execute(sa.select(DECISIONS.c.id)).scalars())
    finally:
        database.dispose()


# ------------------------------------------------------------------------------ faults


@pytest.fixture
def own_postgres(postgres_server):
    """A PostgreSQL server of the test's own, which it may stop (``postgres_server`` is asked
    for its rule: skip without the server binaries, fail under ``make test``)."""
    server = PostgresServer().start()
    yield server
    server.cleanup()


def _service_on(server: PostgresServer, served_demo_bank, root: Path) -> tuple[Replica, str]:
    """A replica (not started) on a new, upgraded database of ``server``, and a mobile key."""
    url = server.create_database()
    nbo("db", "upgrade", "--database", url, "--state", str(root / "cli"))
    key = create_key(url, "mobile", root / "cli")
    return Replica(served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"],
                   root / "state", url), key


@dataclass(frozen=True)
class Sent:
    began: float
    ended: float
    asked: tuple[str, str, str, str] | None  # a response's fields; None for offers
    answer: Answer


def _assert_store_unavailable(answer: Answer, replica: Replica) -> None:
    assert answer.status == 503 and answer.code == "store_unavailable", (
        f"{answer}\n{replica.log_tail(15)}")


def test_postgres_going_away_under_load_fails_fast_and_loses_no_response(
        own_postgres, served_demo_bank, demo_bank, packaged_catalog, tmp_path):
    replica, key = _service_on(own_postgres, served_demo_bank, tmp_path)
    customers = _plain_customers(demo_bank)
    products = [str(p) for p in packaged_catalog.ids.external_ids]
    sent: list[Sent] = []
    stop = threading.Event()

    def post(thread: int) -> None:
        n = 0
        while not stop.is_set():  # each response asked once: its fields say which it is
            asked = (customers[(thread * 300 + n) % len(customers)], products[n % len(products)],
                     ("shown", "declined")[n % 2], "branch")
            began = time.monotonic()
            answer = _respond(replica, key, *asked, timeout=30)
            sent.append(Sent(began, time.monotonic(), asked, answer))
            n += 1

    def offers() -> None:
        n = 0
        while not stop.is_set():
            began = time.monotonic()
            answer = replica.call("GET", f"/v1/customers/{customers[n % 50]}/offers", key,
                                  timeout=30)
            sent.append(Sent(began, time.monotonic(), None, answer))
            n += 1

    def count(status: int, after: float = 0.0, posts: bool = True) -> int:
        return sum(1 for s in list(sent) if s.answer.status == status and s.began > after
                   and (s.asked is not None) == posts)

    with serving(replica):
        load = [threading.Thread(target=post, args=(t,)) for t in range(4)]
        load.append(threading.Thread(target=offers))
        for thread in load:
            thread.start()
        try:
            wait_until(lambda: count(201) >= 20 and count(200, posts=False) >= 3, 30,
                       "responses recorded before the stop")
            stopping = time.monotonic()
            own_postgres.stop("immediate")  # as a crash
            stopped = time.monotonic()
            readyz = replica.call("GET", "/readyz")
            _assert_store_unavailable(readyz, replica)
            wait_until(lambda: count(503, stopped) >= 10 and count(503, stopped, False) >= 2, 15,
                       "requests refused while PostgreSQL is down")
            time.sleep(max(0.0, stopped + OUTAGE_S - time.monotonic()))  # keys re-read too
            _assert_store_unavailable(replica.call("GET", "/readyz"), replica)
            restarting = time.monotonic()
            own_postgres.start_again()
            back = time.monotonic()
            ready_s = replica.wait_for("/readyz", 200, timeout=RECOVERS_WITHIN_S)
            wait_until(lambda: count(201, back) >= 10 and count(200, back, False) >= 2,
                       RECOVERS_WITHIN_S - ready_s, "responses recorded after the restart")
        finally:
            stop.set()
            for thread in load:
                thread.join()
        log = replica.log_text()

    assert {s.answer.status for s in sent} <= {200, 201, 503}, {
        s.answer.status: s.answer.body for s in sent if s.answer.status not in (200, 201, 503)}
    refused = [s for s in sent if s.answer.status == 503]
    for s in refused:
        _assert_store_unavailable(s.answer, replica)
        assert s.answer.headers.get("Retry-After") == "1"
        assert s.answer.seconds < STORE_FAILS_WITHIN_S, s
    # while the server was down, nothing that needs it can succeed
    down = [s for s in sent if s.began > stopped and s.ended < restarting]
    assert down and all(s.answer.status == 503 for s in down)
    # every 201 is in the database, as answered; any other row is a response in flight
    # when the server went down (committed, its answer lost), never one asked later
    recorded = {s.answer.body["id"]: s.answer.body for s in sent if s.answer.status == 201}
    stored = {row["id"]: row for row in _stored(replica.database)}
    assert {i: stored.get(i) for i in recorded} == recorded
    in_flight = {s.asked for s in refused if s.asked and s.began < stopped and s.ended > stopping}
    extra = [row for i, row in stored.items() if i not in recorded]
    assert all((r["customer_id"], r["product_id"], r["outcome"], r["channel"]) in in_flight
               for r in extra), extra
    assert len(extra) <= len(in_flight)
    # every decision answered is logged once the database is back (queued meanwhile)
    answered = {s.answer.body["decision_id"] for s in sent
                if s.asked is None and s.answer.status == 200}
    wait_until(lambda: answered <= _decision_ids(replica.database), 10,
               "the decisions answered, in the log")
    assert log.count("Booting worker") == 1, log  # recovered by itself: no worker restarted
    assert "unhandled" not in log, log
    # an outage is expected, not a bug: said in a line per source (the 503s, the decision
    # queue, the key store), not a traceback per attempt
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert "Traceback" not in log and len(errors) <= 3, "\n".join(errors) or log[-3000:]


def test_a_service_started_while_postgres_is_away_becomes_ready_when_it_answers(
        own_postgres, served_demo_bank, tmp_path, demo_bank):
    replica, key = _service_on(own_postgres, served_demo_bank, tmp_path)
    own_postgres.stop("fast")
    customer = _plain_customers(demo_bank)[0]
    with serving(replica, ready=False):  # alive: /healthz
        assert replica.call("GET", "/healthz").status == 200
        readyz = replica.call("GET", "/readyz")
        _assert_store_unavailable(readyz, replica)
        assert "unavailable" in readyz.body["message"]
        # a good key, but the keys could never be read: 503 (retry), never 401 (go away);
        # asked over more than a second, as the key store reads again once a second
        refused = []
        for _ in range(8):
            refused.append(replica.call("GET", f"/v1/customers/{customer}/offers", key))
            time.sleep(0.2)
        at_start = replica.log_text()

        own_postgres.start_again()
        replica.wait_for("/readyz", 200, timeout=RECOVERS_WITHIN_S)
        wait_until(lambda: replica.call("GET", f"/v1/customers/{customer}/offers",
                                        key).status == 200, 5, "offers once ready")
        log = replica.log_text()

    database = Database(replica.database)
    name = database.name  # as the service names it: no password, the socket folder quoted
    database.dispose()
    said = [line for line in at_start.splitlines()
            if name in line and "unavailable" in line and "not ready until it answers" in line]
    # one line from the command before it execs gunicorn, one from the worker; none again
    assert sum("starting anyway" in line for line in said) == 1, at_start
    assert sum("unavailable at start" in line for line in said) == 1, at_start
    assert len(said) == 2, said
    assert [line for line in log.splitlines() if "not ready until it answers" in line] == said
    assert "Traceback" not in log and "unhandled" not in log, log
    answered = [(a.status, a.code) for a in refused]
    assert answered == [(503, "store_unavailable")] * len(refused), (
        f"a good key was refused as invalid while the keys could not be read: {answered}")
    assert all(a.headers.get("Retry-After") == "1" for a in refused)
    assert all(a.seconds < STORE_FAILS_WITHIN_S for a in refused), refused
