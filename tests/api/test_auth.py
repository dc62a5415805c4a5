"""API keys and roles: the key file (hashes only, atomic, concurrent-safe), the store
(expiry, re-reading the file), the HTTP checks (401, 403, the role matrix, open routes)
and ``nbo keys``.

The service is a small demo bank trained once per module; apps are built around it with
``create_app({"SERVICE": ...})`` so each test can have its own keys file cheaply.
"""

from __future__ import annotations

import logging
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from flask import Blueprint, g

import recommender.store.keys as keys_module
from api import create_app
from api.auth import ROUTE_ROLES, allowed_roles, is_open
from recommender.cli import main
from recommender.exceptions import ConfigError, RecommenderError
from recommender.service import load_service
from recommender.store.keys import (
    ROLES,
    ApiKey,
    ExpiredKeyError,
    InvalidKeyError,
    KeysFileError,
    KeyStore,
    UnknownKeyIdError,
    create_key,
    hash_key,
    list_keys,
    revoke_key,
)

ERROR_KEYS = {"code", "message", "details"}

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def service(served_demo_bank, tmp_path_factory):
    return load_service(served_demo_bank["DATA_DIR"], served_demo_bank["MODELS_DIR"],
                        state_dir=tmp_path_factory.mktemp("auth_state"))


@pytest.fixture(scope="module")
def customer_id(service) -> str:
    return str(service.book.batch(np.array([0])).customer_ids[0])


admin_bp = Blueprint("test_admin", __name__)


@admin_bp.post("/test-whoami")
def whoami():
    return {"id": g.api_key.id, "role": g.api_key.role}


def _app(service, keys_file: Path, **config):
    app = create_app({"SERVICE": service, "STATE_DIR": str(keys_file.parent),
                      "API_KEYS_FILE": str(keys_file), **config})
    app.register_blueprint(admin_bp, url_prefix="/admin")  # stands for /admin/reload & co.
    return app


@pytest.fixture(scope="module")
def role_keys(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("auth_keys") / "api_keys.toml"
    return path, {role: create_key(path, role, f"{role} test")[0] for role in ROLES}


@pytest.fixture(scope="module")
def app(service, role_keys):
    return _app(service, role_keys[0])


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


# --------------------------------------------------------------------------- the keys file


def test_a_created_key_is_stored_as_its_hash_only(tmp_path):
    path = tmp_path / "state" / "api_keys.toml"
    clear, key = create_key(path, "teller", "branch 12 counter 3", expires_days=30)
    assert clear.startswith("nbo_") and len(clear) == 4 + 43  # 32 random bytes, base64url
    text = path.read_text(encoding="utf-8")
    assert clear not in text and clear[4:] not in text
    assert hash_key(clear) in text and f'id = "{key.id}"' in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key.role == "teller" and key.name == "branch 12 counter 3"
    assert key.expires_at - key.created_at == timedelta(days=30)
    assert KeyStore(path).authenticate(clear) == key
    assert list_keys(path) == [key]
    assert not list(path.parent.glob("*.tmp"))


def test_keys_are_unique_and_names_round_trip(tmp_path):
    path = tmp_path / "api_keys.toml"
    name = 'counter "3" \\ 柜台三号'
    made = [create_key(path, role, name) for role in ROLES]
    assert len({clear for clear, _ in made}) == len({k.id for _, k in made}) == 4
    assert list_keys(path) == [k for _, k in made]
    assert all(k.name == name and k.expires_at is None for k in list_keys(path))


def test_revoking_removes_exactly_that_key(tmp_path):
    path = tmp_path / "api_keys.toml"
    (a, key_a), (b, key_b) = create_key(path, "mobile"), create_key(path, "admin")
    assert revoke_key(path, key_a.id) == key_a
    assert list_keys(path) == [key_b]
    store = KeyStore(path)
    with pytest.raises(InvalidKeyError):
        store.authenticate(a)
    assert store.authenticate(b) == key_b
    with pytest.raises(UnknownKeyIdError, match=f"{key_a.id}.*{path}"):
        revoke_key(path, key_a.id)


@pytest.mark.parametrize("kwargs, match", [
    ({"role": "manager"}, "'manager' is not one of"),
    ({"role": "teller", "expires_days": 0}, "expires_days"),
    ({"role": "teller", "name": "two\nlines"}, "control characters"),
])
def test_bad_key_requests_are_refused(tmp_path, kwargs, match):
    path = tmp_path / "api_keys.toml"
    with pytest.raises(ConfigError, match=match):
        create_key(path, **kwargs)
    assert not path.exists()


def test_concurrent_creates_lose_no_key(tmp_path):
    path = tmp_path / "api_keys.toml"
    start = threading.Barrier(8)

    def worker(n: int) -> list[tuple[str, ApiKey]]:
        start.wait()
        return [create_key(path, ROLES[n % 4], f"thread {n} key {k}") for k in range(5)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        made = [m for f in [pool.submit(worker, n) for n in range(8)] for m in f.result()]
    assert len(made) == 40 and len({k.id for _, k in made}) == 40
    assert {k.id for k in list_keys(path)} == {k.id for _, k in made}
    store = KeyStore(path)
    assert all(store.authenticate(clear) == key for clear, key in made)


def _entry(**fields) -> str:
    entry = {"id": '"k_00000001"', "role": '"teller"', "hash": f'"{hash_key("x")}"',
             "created_at": "2026-11-28T20:00:00Z", **fields}
    return "[[keys]]\n" + "".join(f"{k} = {v}\n" for k, v in entry.items() if v is not None)


@pytest.mark.parametrize("second, match", [
    (_entry(id='"k_2"', role='"manager"'), r"keys\[1\] \(id 'k_2'\): role 'manager'"),
    (_entry(id='"k_2"', hash=None), r"keys\[1\] \(id 'k_2'\): missing fields \['hash'\]"),
    (_entry(id='"k_2"', hash='"md5:abc"'), r"keys\[1\] \(id 'k_2'\): hash must be"),
    (_entry(id='"k_2"', secret='"x"'), r"keys\[1\] \(id 'k_2'\): unknown fields \['secret'\]"),
    (_entry(id='"k_2"', expires_at="2026-12-28T20:00:00"), r"keys\[1\].*expires_at must be"),
    (_entry(hash=f'"{hash_key("y")}"'), r"duplicate key id \['k_00000001'\]"),
    ("[[keys]\nid = 1\n", "not valid TOML"),
    ("[owner]\nname = 'x'\n", "unknown top-level keys"),
])
def test_a_malformed_file_is_refused_naming_the_file_and_entry(tmp_path, second, match):
    path = tmp_path / "api_keys.toml"
    path.write_text(_entry() + second, encoding="utf-8")
    for load in (KeyStore, list_keys, lambda p: create_key(p, "teller")):
        with pytest.raises(KeysFileError, match=match) as raised:
            load(path)
        assert str(path) in str(raised.value)
    assert path.read_text(encoding="utf-8") == _entry() + second  # nothing was overwritten
    assert issubclass(KeysFileError, RecommenderError)


# --------------------------------------------------------------------------- the store


def test_unknown_and_expired_keys_are_refused(tmp_path):
    path = tmp_path / "api_keys.toml"
    with pytest.raises(InvalidKeyError, match="no API keys are configured"):
        KeyStore(path).authenticate("nbo_anything")
    clear, key = create_key(path, "campaign", expires_days=1)
    store = KeyStore(path)
    assert store.authenticate(clear, now=key.created_at + timedelta(hours=23)) == key
    with pytest.raises(ExpiredKeyError, match=key.id) as raised:
        store.authenticate(clear, now=key.created_at + timedelta(days=1))
    assert raised.value.key == key and isinstance(raised.value, InvalidKeyError)
    with pytest.raises(InvalidKeyError, match="unknown API key"):
        store.authenticate(clear + "x")
    assert issubclass(InvalidKeyError, RecommenderError)


def test_the_store_rereads_the_file_at_most_once_a_second(tmp_path):
    path = tmp_path / "api_keys.toml"
    now = [100.0]
    store = KeyStore(path, clock=lambda: now[0])
    assert not store.exists
    clear, key = create_key(path, "teller")
    now[0] += 0.5
    with pytest.raises(InvalidKeyError):
        store.authenticate(clear)  # not looked at again yet
    now[0] += 0.6
    assert store.authenticate(clear) == key and store.exists
    revoke_key(path, key.id)
    now[0] += 1.0
    with pytest.raises(InvalidKeyError):
        store.authenticate(clear)


def test_a_file_broken_after_start_fails_closed_until_fixed(tmp_path, caplog):
    path = tmp_path / "api_keys.toml"
    clear, key = create_key(path, "teller")
    good = path.read_text(encoding="utf-8")
    now = [0.0]
    store = KeyStore(path, clock=lambda: now[0])
    path.write_text(good + "[[keys]]\nid = 'k_x'\n", encoding="utf-8")
    now[0] += 2
    with caplog.at_level(logging.ERROR, "recommender.store.keys"), \
            pytest.raises(KeysFileError, match=r"keys\[1\] \(id 'k_x'\): missing fields"):
        store.authenticate(clear)
    assert str(path) in caplog.text
    with pytest.raises(KeysFileError):
        store.authenticate(clear)  # still broken, not re-read
    path.write_text(good, encoding="utf-8")
    now[0] += 2
    assert store.authenticate(clear) == key


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
    resp = client.get("/v1/products", headers={"Authorization": f"bearer {role_keys[1]['mobile']}"})
    assert resp.status_code == 200


def test_an_expired_key_is_401_key_expired(service, tmp_path):
    path = tmp_path / "api_keys.toml"
    clear = "nbo_" + "e" * 43
    path.write_text(_entry(hash=f'"{hash_key(clear)}"', expires_at="2020-01-01T00:00:00Z"),
                    encoding="utf-8")
    client = _app(service, path).test_client()
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
    with caplog.at_level(logging.INFO):
        resp = client.open(path, method=method, json=BODIES.get(template),
                           headers=_bearer(role_keys[1][role]))
    if role in MATRIX[method, template]:
        assert resp.status_code in (200, 201), resp.get_data(as_text=True)
        return
    body = _error(resp, 403, "forbidden")
    rule = template.replace("{cid}", "<customer_id>").replace("mortgage", "<product_id>")
    assert body["message"] == f"role {role!r} may not call {method} {rule}"
    assert body["details"]["role"] == role and body["details"]["route"] == rule
    assert set(body["details"]["allowed_roles"]) == MATRIX[method, template]
    assert customer_id not in caplog.text
    assert role_keys[1][role] not in caplog.text


def test_a_route_sees_the_key_in_g(client, role_keys):
    resp = client.post("/admin/test-whoami", headers=_bearer(role_keys[1]["admin"]))
    key = next(k for k in list_keys(role_keys[0]) if k.role == "admin")
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
                   headers=_bearer(role_keys[1]["mobile"]))
        client.get(f"/v1/customers/{customer_id}", headers=_bearer("nbo_guessed"))
    assert "/v1/customers/<customer_id>/responses" in caplog.text and "mobile" in caplog.text
    assert customer_id not in caplog.text and "nbo_guessed" not in caplog.text
    assert not any(k in caplog.text for k in role_keys[1].values())


# --------------------------------------------------------------------------- HTTP: open routes


def test_open_routes_need_no_key_and_unknown_routes_stay_404_405(client):
    assert client.get("/healthz").status_code == 200
    for path in ("/readyz", "/metrics", "/openapi.json", "/teller", "/teller/app.js"):
        assert is_open(path)
        assert client.get(path).status_code != 401, path
    assert not is_open("/teller-admin") and not is_open("/v1/teller")
    _error(client.get("/no/such/route"), 404, "not_found")
    _error(client.delete("/v1/products"), 405, "method_not_allowed")


def test_without_a_keys_file_the_app_starts_and_refuses_every_key(service, tmp_path, caplog):
    path = tmp_path / "nowhere" / "api_keys.toml"
    with caplog.at_level(logging.WARNING, "api.auth"):
        client = _app(service, path).test_client()
    assert str(path) in caplog.text and "nbo keys create --role admin" in caplog.text
    assert client.get("/healthz").status_code == 200
    _error(client.get("/v1/products", headers=_bearer("nbo_x")), 401, "unauthorized")


def test_the_keys_file_defaults_to_the_state_folder(service, tmp_path, monkeypatch):
    monkeypatch.delenv("NBO_API_KEYS_FILE", raising=False)
    clear, _ = create_key(tmp_path / "api_keys.toml", "mobile")
    app = create_app({"SERVICE": service, "STATE_DIR": str(tmp_path)})
    assert Path(app.config["API_KEYS_FILE"]) == tmp_path / "api_keys.toml"
    assert app.test_client().get("/v1/products", headers=_bearer(clear)).status_code == 200
    monkeypatch.setenv("NBO_API_KEYS_FILE", str(tmp_path / "other.toml"))
    app = create_app({"SERVICE": service, "STATE_DIR": str(tmp_path)})
    assert app.config["API_KEYS_FILE"] == str(tmp_path / "other.toml")


def test_a_malformed_keys_file_stops_the_app_from_starting(service, tmp_path):
    path = tmp_path / "api_keys.toml"
    path.write_text(_entry(role='"root"'), encoding="utf-8")
    with pytest.raises(KeysFileError, match=rf"{path}: keys\[0\] \(id 'k_00000001'\): role"):
        _app(service, path)


# --------------------------------------------------------------------------- nbo keys


def test_nbo_keys_create_list_revoke_takes_effect_without_a_restart(service, tmp_path, capsys,
                                                                    monkeypatch):
    path = tmp_path / "api_keys.toml"
    monkeypatch.setattr(keys_module, "RECHECK_SECONDS", 0.0)  # no waiting a second in a test
    client = _app(service, path).test_client()
    assert main(["keys", "create", "--role", "teller", "--name", "branch 12", "--expires-days",
                 "30", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    key_line, id_line = out.splitlines()
    assert key_line.startswith("API key: nbo_")
    clear = key_line.removeprefix("API key: ")
    (key,) = list_keys(path)
    assert key.id in id_line and "teller" in id_line
    assert clear not in path.read_text(encoding="utf-8")
    assert client.get("/v1/products", headers=_bearer(clear)).status_code == 200

    assert main(["keys", "list", "--file", str(path)]) == 0
    listing = capsys.readouterr().out
    assert key.id in listing and "teller" in listing and "branch 12" in listing
    assert key.expires_at.isoformat() in listing
    assert clear not in listing and "sha256" not in listing and hash_key(clear)[7:] not in listing

    assert main(["keys", "revoke", key.id, "--file", str(path)]) == 0
    assert key.id in capsys.readouterr().out
    _error(client.get("/v1/products", headers=_bearer(clear)), 401, "unauthorized")
    assert main(["keys", "list", "--file", str(path)]) == 0
    assert "no API keys" in capsys.readouterr().out


def test_nbo_keys_defaults_to_the_state_folder_and_refuses_bad_input(tmp_path, capsys):
    assert main(["keys", "create", "--role", "admin", "--state", str(tmp_path)]) == 0
    assert [k.role for k in list_keys(tmp_path / "api_keys.toml")] == ["admin"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["keys", "create", "--role", "manager", "--state", str(tmp_path)])
    assert exited.value.code == 2 and "invalid choice: 'manager'" in capsys.readouterr().err
    assert main(["keys", "revoke", "k_nope", "--state", str(tmp_path)]) == 2
    assert len(list_keys(tmp_path / "api_keys.toml")) == 1


def test_expiry_is_compared_in_utc():
    key = ApiKey("k_1", "teller", "", datetime(2026, 1, 1, tzinfo=UTC),
                 datetime(2026, 1, 2, tzinfo=UTC))
    assert not key.expired(datetime(2026, 1, 1, 23, 59, tzinfo=UTC))
    assert key.expired(datetime(2026, 1, 2, tzinfo=UTC))
