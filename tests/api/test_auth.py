"""API keys and roles: the keys in the stores' database (hashes only, concurrent-safe), the
store (expiry, re-reading the keys, a database that goes away), the HTTP checks (401, 403,
503, the role matrix, open routes) and ``nbo keys``.

The service is a small demo bank loaded once per module on a database holding one key of
each role; apps are built around it with ``create_app({"SERVICE": ...})``. A test that needs
keys of its own gets the same service on a database of its own (``own_service``), cheaply.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from flask import Blueprint, g

import recommender.store.keys as keys_module
from api import create_app
from api.auth import EXTENSION as KEYS_EXTENSION
from api.auth import ROUTE_ROLES, allowed_roles, is_open
from recommender.cli import main
from recommender.exceptions import ConfigError, RecommenderError
from recommender.service import OfferService, load_service
from recommender.store import tables
from recommender.store.database import Database, StoreUnavailableError
from recommender.store.keys import (
    ROLES,
    ApiKey,
    ExpiredKeyError,
    InvalidKeyError,
    KeyStore,
    UnknownKeyIdError,
    create_key,
    hash_key,
    list_keys,
    revoke_key,
)

ERROR_KEYS = {"code", "message", "details"}

# --------------------------------------------------------------------------- fixtures


def _url(folder: Path) -> str:
    """A database of its own: an SQLite file in ``folder``."""
    return f"sqlite:///{folder / 'nbo.db'}"


@pytest.fixture(scope="module")
def service_state(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("auth_state")


@pytest.fixture(scope="module")
def service(served_demo_bank, service_state) -> Iterator[OfferService]:
    loaded = load_service(served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"],
                          state_dir=service_state, database=_url(service_state))
    yield loaded
    loaded.responses.database.dispose()


@pytest.fixture
def own_service(served_demo_bank, service_state, tmp_path) -> Iterator[OfferService]:
    """The module's service on a database of this test's own, with no keys in it."""
    loaded = load_service(served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"],
                          state_dir=service_state, database=_url(tmp_path / "db"))
    yield loaded
    loaded.responses.database.dispose()


@pytest.fixture(scope="module")
def customer_id(service) -> str:
    return str(service.book.batch(np.array([0])).customer_ids[0])


admin_bp = Blueprint("test_admin", __name__)


@admin_bp.post("/test-whoami")
def whoami():
    return {"id": g.api_key.id, "role": g.api_key.role}


def _app(service: OfferService, state: Path, **config):
    app = create_app({"SERVICE": service, "STATE_DIR": str(state), **config})
    app.register_blueprint(admin_bp, url_prefix="/admin")  # stands for /admin/reload & co.
    return app


@pytest.fixture(scope="module")
def role_keys(service) -> dict[str, tuple[str, ApiKey]]:
    """One key of each role in the module service's database: role -> (clear key, record)."""
    return {role: create_key(service.responses.database, role, f"{role} test")
            for role in ROLES}


@pytest.fixture(scope="module")
def app(service, service_state, role_keys):
    return _app(service, service_state)


@pytest.fixture(scope="module")
def client(app):
    return app.test_client()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _error(resp, status: int, code: str) -> dict:
    body = resp.get_json()
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert set(body) == ERROR_KEYS and body["code"] == code, body
    return body


def _on_disk(folder: Path) -> bytes:
    """All the database holds on disk: the SQLite file and its write-ahead log."""
    files = sorted(folder.glob("nbo.db*"))
    assert files and files[0].name == "nbo.db"
    return b"".join(f.read_bytes() for f in files)


def _stored_rows(url: str) -> list[dict]:
    """The api_keys table as the database holds it."""
    database = Database(url)
    try:
        with database.connect() as conn:
            rows = conn.execute(sa.select(tables.api_keys).order_by(tables.api_keys.c.created_at,
                                                                    tables.api_keys.c.id))
            return [dict(row._mapping) for row in rows]
    finally:
        database.dispose()


def _add_expired_key(database: Database, role: str = "teller") -> tuple[str, str]:
    """A key whose expiry has passed, stored as ``create_key`` stores keys (it refuses an
    expiry in the past): (clear key, id)."""
    clear = "nbo_" + "e" * 43
    with database.begin(write=True) as conn:
        conn.execute(sa.insert(tables.api_keys), {
            "id": "k_0000dead", "role": role, "name": "expired", "hash": hash_key(clear),
            "created_at": datetime(2019, 12, 1, tzinfo=UTC),
            "expires_at": datetime(2020, 1, 1, tzinfo=UTC)})
    return clear, "k_0000dead"


def _go_away(database: Database, folder: Path) -> Path:
    """Take the SQLite database's folder away (as an unmounted volume): its pooled
    connections are closed, and no new one can be opened until ``_come_back``."""
    database.dispose()
    away = folder.with_name(folder.name + "-away")
    folder.rename(away)
    return away


def _come_back(away: Path, folder: Path) -> None:
    away.rename(folder)


# --------------------------------------------------------------------------- keys in the database


def test_a_created_key_is_stored_as_its_hash_only(tmp_path):
    path = tmp_path / "state" / "nbo.db"
    clear, key = create_key(path, "teller", "branch 12 counter 3", expires_days=30)
    assert clear.startswith("nbo_") and len(clear) == 4 + 43  # 32 random bytes, base64url
    stored = _on_disk(path.parent)
    assert clear.encode() not in stored and clear[4:].encode() not in stored
    assert hash_key(clear).encode() in stored and key.id.encode() in stored
    (row,) = _stored_rows(_url(path.parent))
    assert {k: row[k] for k in ("id", "role", "name", "hash")} == {
        "id": key.id, "role": "teller", "name": "branch 12 counter 3", "hash": hash_key(clear)}
    assert key.role == "teller" and key.name == "branch 12 counter 3"
    assert key.expires_at - key.created_at == timedelta(days=30)
    assert KeyStore(path).authenticate(clear) == key
    assert list_keys(path) == [key]
    assert list_keys(_url(path.parent)) == [key]  # a path and its URL: the same database


def test_keys_are_unique_and_names_round_trip(tmp_path):
    url = _url(tmp_path)
    name = 'counter "3" \\ 柜台三号 \'; DROP TABLE api_keys; --'
    made = [create_key(url, role, name) for role in ROLES]
    assert len({clear for clear, _ in made}) == len({k.id for _, k in made}) == 4
    assert sorted(list_keys(url), key=lambda k: k.id) == sorted((k for _, k in made),
                                                                key=lambda k: k.id)
    assert all(k.name == name and k.expires_at is None for k in list_keys(url))


def test_keys_are_listed_in_the_order_they_were_created(tmp_path):
    url = _url(tmp_path)
    made = [create_key(url, ROLES[n % 4], f"key {n}")[1] for n in range(12)]  # within a second
    assert [k.name for k in list_keys(url)] == [k.name for k in made]


def test_revoking_removes_exactly_that_key(tmp_path):
    database = Database(_url(tmp_path))
    database.upgrade()
    (a, key_a), (b, key_b) = create_key(database, "mobile"), create_key(database, "admin")
    assert revoke_key(database, key_a.id) == key_a
    assert list_keys(database) == [key_b]
    store = KeyStore(database)
    with pytest.raises(InvalidKeyError):
        store.authenticate(a)
    assert store.authenticate(b) == key_b
    with pytest.raises(UnknownKeyIdError, match=f"{key_a.id}.*{re.escape(database.name)}"):
        revoke_key(database, key_a.id)
    database.dispose()


@pytest.mark.parametrize("kwargs, match", [
    ({"role": "manager"}, "'manager' is not one of"),
    ({"role": "teller", "expires_days": 0}, "expires_days"),
    ({"role": "teller", "name": "two\nlines"}, "control characters"),
])
def test_bad_key_requests_are_refused(tmp_path, kwargs, match):
    path = tmp_path / "nbo.db"
    with pytest.raises(ConfigError, match=match):
        create_key(path, **kwargs)
    assert not path.exists()  # refused before the database was even opened


@pytest.mark.parametrize("shared", [False, True], ids=["a_database_each", "one_database"])
def test_concurrent_creates_lose_no_key(tmp_path, shared):
    """Threads creating keys at once, each opening the new file itself (as separate `nbo keys`
    runs do) or sharing one ``Database`` (as the threads of a worker do)."""
    url = _url(tmp_path)
    target = Database(url) if shared else url
    if shared:
        target.upgrade()  # a Database given is used as it is: its owner made its schema
    start = threading.Barrier(8)

    def worker(n: int) -> list[tuple[str, ApiKey]]:
        start.wait()
        return [create_key(target, ROLES[n % 4], f"thread {n} key {k}") for k in range(5)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        made = [m for f in [pool.submit(worker, n) for n in range(8)] for m in f.result()]
    assert len(made) == 40 and len({k.id for _, k in made}) == 40
    assert {k.id for k in list_keys(url)} == {k.id for _, k in made}
    store = KeyStore(url)
    assert all(store.authenticate(clear) == key for clear, key in made)
    store.database.dispose()
    if shared:
        target.dispose()


# --------------------------------------------------------------------------- the store


def test_unknown_and_expired_keys_are_refused(tmp_path):
    url = _url(tmp_path)
    with pytest.raises(InvalidKeyError, match="no API keys are configured"):
        KeyStore(url).authenticate("nbo_anything")
    clear, key = create_key(url, "campaign", expires_days=1)
    store = KeyStore(url)
    assert store.authenticate(clear, now=key.created_at + timedelta(hours=23)) == key
    with pytest.raises(ExpiredKeyError, match=key.id) as raised:
        store.authenticate(clear, now=key.created_at + timedelta(days=1))
    assert raised.value.key == key and isinstance(raised.value, InvalidKeyError)
    with pytest.raises(InvalidKeyError, match="unknown API key"):
        store.authenticate(clear + "x")
    assert issubclass(InvalidKeyError, RecommenderError)


def test_the_store_rereads_the_keys_at_most_once_a_recheck(tmp_path):
    url = _url(tmp_path)
    now = [100.0]
    store = KeyStore(url, clock=lambda: now[0])
    assert len(store) == 0  # nothing read yet
    with pytest.raises(InvalidKeyError, match="no API keys are configured"):
        store.authenticate("nbo_anything")  # read now: none yet
    clear, key = create_key(url, "teller")
    now[0] += 0.5
    with pytest.raises(InvalidKeyError):
        store.authenticate(clear)  # not looked at again yet
    now[0] += 0.6
    assert store.authenticate(clear) == key and len(store) == 1
    revoke_key(url, key.id)
    now[0] += 1.0
    with pytest.raises(InvalidKeyError):
        store.authenticate(clear)

    slow = KeyStore(url, recheck_seconds=60, clock=lambda: now[0])
    clear, key = create_key(url, "mobile")
    assert slow.authenticate(clear) == key
    revoke_key(url, key.id)
    now[0] += 59
    assert slow.authenticate(clear) == key  # within its recheck: the keys last read
    slow.refresh()  # ... unless asked to read them now
    with pytest.raises(InvalidKeyError):
        slow.authenticate(clear)


def test_while_the_database_is_away_the_keys_last_read_stay_in_force(tmp_path, caplog):
    folder = tmp_path / "db"
    url = _url(folder)
    clear, key = create_key(url, "teller")
    database, never_read = Database(url), Database(url)
    now = [0.0]
    store = KeyStore(database, clock=lambda: now[0])
    assert store.authenticate(clear) == key

    away = _go_away(database, folder)
    now[0] += 2
    with caplog.at_level(logging.ERROR, "recommender.store.keys"):
        assert store.authenticate(clear) == key  # tried to read, kept the keys last read
        with pytest.raises(StoreUnavailableError, match="unavailable"):
            store.refresh()
        late = KeyStore(never_read, clock=lambda: now[0])
        with pytest.raises(StoreUnavailableError):  # no keys ever read: no key is accepted
            late.authenticate(clear)
        now[0] += 0.5  # within the recheck: not read again, still unknown rather than none
        with pytest.raises(StoreUnavailableError, match="could not be read yet"):
            late.authenticate(clear)
    assert caplog.text.count("keeping the keys last read") == 1  # logged once, not per call
    assert "refusing every key until the database answers" in caplog.text

    _come_back(away, folder)
    now[0] += 2
    assert late.authenticate(clear) == key
    revoke_key(url, key.id)
    now[0] += 2
    with pytest.raises(InvalidKeyError):
        store.authenticate(clear)  # reading again, it follows the database
    database.dispose()
    never_read.dispose()


# --------------------------------------------------------------------------- HTTP: 401


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer  "},
    {"Authorization": "Basic dGVsbGVyOnNlY3JldA=="}, {"Authorization": "nbo_abc"},
    {"Authorization": "Bearer nbo_not-a-key"},
])
def test_a_request_without_a_valid_key_is_401(client, headers):
    for path in ("/v1/products", "/v1/customers/C1/offers", "/admin/test-whoami"):
        method = client.post if path.startswith("/admin") else client.get
        resp = method(path, headers=headers)
        _error(resp, 401, "unauthorized")
        assert resp.headers["WWW-Authenticate"] == "Bearer"


def test_the_bearer_scheme_is_case_insensitive(client, role_keys):
    resp = client.get("/v1/products",
                      headers={"Authorization": f"bearer {role_keys['mobile'][0]}"})
    assert resp.status_code == 200


def test_an_expired_key_is_401_key_expired(own_service, tmp_path):
    clear, _ = _add_expired_key(own_service.responses.database)
    client = _app(own_service, tmp_path).test_client()
    resp = client.get("/v1/products", headers=_bearer(clear))
    body = _error(resp, 401, "key_expired")
    assert "expired" in body["message"] and resp.headers["WWW-Authenticate"] == "Bearer"


# --------------------------------------------------------------------------- HTTP: roles

MATRIX = {  # the table: (method, path) -> roles that may call it
    ("GET", "/v1/products"): set(ROLES),
    ("GET", "/v1/life-stages"): set(ROLES),
    ("GET", "/v1/model"): set(ROLES),
    ("GET", "/v1/customers/{cid}"): {"teller", "mobile", "admin"},
    ("GET", "/v1/customers/{cid}/offers"): {"teller", "mobile", "admin"},
    ("GET", "/v1/customers/{cid}/offers/mortgage/why-not"): {"teller", "admin"},
    ("POST", "/v1/customers/{cid}/responses"): {"teller", "mobile", "admin"},
    ("GET", "/v1/customers/{cid}/responses"): {"teller", "admin"},
    ("POST", "/v1/offers/score"): {"teller", "campaign", "admin"},
    ("POST", "/admin/test-whoami"): {"admin"},
}
BODIES = {
    "/v1/customers/{cid}/responses": {"product_id": "credit_card", "outcome": "shown",
                                      "channel": "branch"},
    "/v1/offers/score": {"customer": {
        "age": 31, "income": 180000, "marital_status": "married", "dependants": 1,
        "tenure_months": 24, "segment": "mass", "risk_grade": "C3", "residency": "resident",
        "consent_profiling": True}, "holdings": ["current_account"]},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("method, template", sorted(MATRIX))
def test_each_role_may_call_exactly_its_routes(client, role_keys, customer_id, caplog, role,
                                               method, template):
    path = template.format(cid=customer_id)
    clear = role_keys[role][0]
    with caplog.at_level(logging.INFO):
        resp = client.open(path, method=method, json=BODIES.get(template),
                           headers=_bearer(clear))
    if role in MATRIX[method, template]:
        assert resp.status_code in (200, 201), resp.get_data(as_text=True)
        return
    body = _error(resp, 403, "forbidden")
    rule = template.replace("{cid}", "<customer_id>").replace("mortgage", "<product_id>")
    assert body["message"] == f"role {role!r} may not call {method} {rule}"
    assert body["details"]["role"] == role and body["details"]["route"] == rule
    assert set(body["details"]["allowed_roles"]) == MATRIX[method, template]
    assert customer_id not in caplog.text
    assert clear not in caplog.text


def test_a_route_sees_the_key_in_g(client, role_keys):
    clear, key = role_keys["admin"]
    resp = client.post("/admin/test-whoami", headers=_bearer(clear))
    assert resp.get_json() == {"id": key.id, "role": "admin"}


def test_the_table_names_real_routes_and_anything_else_is_admin_only(app):
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    assert set(ROUTE_ROLES) <= endpoints, "a view was renamed: update api.auth.ROUTE_ROLES"
    assert allowed_roles("admin.reload") == allowed_roles("brand_new.view") == {"admin"}
    assert all("admin" in roles for roles in ROUTE_ROLES.values())


def test_logs_name_the_key_and_route_never_the_customer_or_the_key(client, role_keys,
                                                                   customer_id, caplog):
    with caplog.at_level(logging.INFO):
        client.get(f"/v1/customers/{customer_id}/responses",
                   headers=_bearer(role_keys["mobile"][0]))
        client.get(f"/v1/customers/{customer_id}", headers=_bearer("nbo_guessed"))
    assert "/v1/customers/<customer_id>/responses" in caplog.text and "mobile" in caplog.text
    assert role_keys["mobile"][1].id in caplog.text
    assert customer_id not in caplog.text and "nbo_guessed" not in caplog.text
    assert not any(clear in caplog.text for clear, _ in role_keys.values())


# --------------------------------------------------------------------------- HTTP: open routes


def test_open_routes_need_no_key_and_unknown_routes_stay_404_405(client):
    assert client.get("/healthz").status_code == 200
    for path in ("/readyz", "/metrics", "/openapi.json", "/teller", "/teller/app.js"):
        assert is_open(path)
        assert client.get(path).status_code != 401, path
    assert not is_open("/teller-admin") and not is_open("/v1/teller")
    _error(client.get("/no/such/route"), 404, "not_found")
    _error(client.delete("/v1/products"), 405, "method_not_allowed")


# --------------------------------------------------------------------------- HTTP: the database


def test_without_keys_the_app_starts_and_refuses_every_key(own_service, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, "api.auth"):
        client = _app(own_service, tmp_path).test_client()
    assert own_service.responses.database.name in caplog.text
    assert "nbo keys create --role admin" in caplog.text
    assert client.get("/healthz").status_code == 200
    _error(client.get("/v1/products", headers=_bearer("nbo_x")), 401, "unauthorized")


def test_the_keys_are_those_of_the_services_database(served_demo_bank, tmp_path, monkeypatch):
    """By default the state folder's nbo.db; NBO_DATABASE_URL, then DATABASE_URL, name
    another."""
    monkeypatch.delenv("NBO_DATABASE_URL", raising=False)
    state, elsewhere = tmp_path / "state", _url(tmp_path / "elsewhere")
    here, _ = create_key(state / "nbo.db", "mobile")
    there, _ = create_key(elsewhere, "mobile")

    app = create_app({**served_demo_bank, "STATE_DIR": str(state)})
    keys = app.extensions[KEYS_EXTENSION]
    assert keys.database is app.extensions["nbo"].responses.database
    assert keys.database.name == _url(state.resolve())
    client = app.test_client()
    assert client.get("/v1/products", headers=_bearer(here)).status_code == 200
    _error(client.get("/v1/products", headers=_bearer(there)), 401, "unauthorized")

    monkeypatch.setenv("NBO_DATABASE_URL", elsewhere)
    app = create_app({**served_demo_bank, "STATE_DIR": str(state)})
    assert app.extensions[KEYS_EXTENSION].database.name == elsewhere
    client = app.test_client()
    assert client.get("/v1/products", headers=_bearer(there)).status_code == 200
    _error(client.get("/v1/products", headers=_bearer(here)), 401, "unauthorized")

    app = create_app({**served_demo_bank, "STATE_DIR": str(state),
                      "DATABASE_URL": _url(state)})  # the app's config over the environment
    assert app.test_client().get("/v1/products", headers=_bearer(here)).status_code == 200


def test_while_the_keys_cannot_be_read_protected_routes_are_503(own_service, tmp_path,
                                                                monkeypatch):
    """A database away when the app starts does not stop it: protected routes answer 503
    store_unavailable (not 401: the key may be good) and /readyz says not ready, until the
    database answers again."""
    monkeypatch.setattr(keys_module, "RECHECK_SECONDS", 0.0)  # no waiting a second in a test
    database = own_service.responses.database
    clear, _ = create_key(database, "mobile")
    folder = Path(database.url.database).parent
    away = _go_away(database, folder)
    client = _app(own_service, tmp_path).test_client()
    assert client.get("/healthz").status_code == 200
    _error(client.get("/v1/products", headers=_bearer(clear)), 503, "store_unavailable")
    _error(client.get("/readyz"), 503, "store_unavailable")

    _come_back(away, folder)
    assert client.get("/v1/products", headers=_bearer(clear)).status_code == 200
    assert client.get("/readyz").status_code == 200


# --------------------------------------------------------------------------- nbo keys


def test_nbo_keys_create_list_revoke_takes_effect_without_a_restart(own_service, tmp_path,
                                                                    capsys, monkeypatch):
    monkeypatch.setattr(keys_module, "RECHECK_SECONDS", 0.0)  # no waiting a second in a test
    monkeypatch.chdir(tmp_path)  # the default --state, ./var, is this test's
    database = own_service.responses.database
    url = database.name
    client = _app(own_service, tmp_path).test_client()
    assert main(["keys", "create", "--role", "teller", "--name", "branch 12", "--expires-days",
                 "30", "--database", url]) == 0
    out = capsys.readouterr().out
    key_line, id_line = out.splitlines()
    assert key_line.startswith("API key: nbo_")
    clear = key_line.removeprefix("API key: ")
    (key,) = list_keys(database)
    assert key.id in id_line and "teller" in id_line
    assert clear.encode() not in _on_disk(Path(database.url.database).parent)
    assert client.get("/v1/products", headers=_bearer(clear)).status_code == 200

    assert main(["keys", "list", "--database", url]) == 0
    listing = capsys.readouterr().out
    assert key.id in listing and "teller" in listing and "branch 12" in listing
    assert key.expires_at.isoformat(timespec="seconds") in listing
    assert clear not in listing and "sha256" not in listing and hash_key(clear)[7:] not in listing

    assert main(["keys", "revoke", key.id, "--database", url]) == 0
    assert key.id in capsys.readouterr().out
    _error(client.get("/v1/products", headers=_bearer(clear)), 401, "unauthorized")
    assert main(["keys", "list", "--database", url]) == 0
    assert "no API keys" in capsys.readouterr().out
    assert not (tmp_path / "var").exists()  # --database named it all: nothing in ./var


def test_nbo_keys_defaults_to_the_state_folder_and_refuses_bad_input(tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.delenv("NBO_DATABASE_URL", raising=False)
    assert main(["keys", "create", "--role", "admin", "--state", str(tmp_path)]) == 0
    assert [k.role for k in list_keys(tmp_path / "nbo.db")] == ["admin"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create", "--role", "manager", "--state", str(tmp_path)])
    assert exited.value.code == 2 and "invalid choice: 'manager'" in capsys.readouterr().err
    assert main(["keys", "revoke", "k_nope", "--state", str(tmp_path)]) == 2
    assert len(list_keys(tmp_path / "nbo.db")) == 1


def test_expiry_is_compared_in_utc():
    key = ApiKey("k_1", "teller", "", datetime(2026, 1, 1, tzinfo=UTC),
                 datetime(2026, 1, 2, tzinfo=UTC))
    assert not key.expired(datetime(2026, 1, 1, 23, 59, tzinfo=UTC))
    assert key.expired(datetime(2026, 1, 2, tzinfo=UTC))
