"""Shared small fixtures: a tiny catalog, six hand-made customers, their holdings, data folders.

The six customers are chosen so that each has a known life stage (packaged rules) and known
eligibility under the tiny catalog; tests state those answers explicitly.
"""

import os
import uuid

# implicit warns (and filterwarnings=error turns it into a failure) when OpenBLAS runs
# multi-threaded; set it before numpy is imported by any test module.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from api.auth import EXTENSION as KEYS_EXTENSION  # noqa: E402
from recommender.data.catalog import Catalog, parse_catalog
from recommender.data.customers import validate_customers
from recommender.data.demo import generate
from recommender.data.extracts import BankData, validate_holdings
from recommender.data.life_stages import LifeStageRules, load_life_stages
from recommender.store.keys import create_key

TINY_CATALOG_TOML = """
version = "tiny-1"
currency = "CNY"

[[product]]
id = "current_account"
name_en = "Current account"
name_zh = "活期储蓄账户"
category = "deposit"
risk_grade = "R1"
value_weight = 1.0
min_age = 16
life_stages = ["student", "starting_out"]

[[product]]
id = "credit_card"
name_en = "Credit card"
name_zh = "信用卡"
category = "credit"
risk_grade = "R1"
value_weight = 3.0
min_age = 18
max_age = 65
min_income = 36000
prerequisites = ["current_account"]
life_stages = ["starting_out", "mid_career"]

[[product]]
id = "mortgage"
name_en = "Home mortgage"
name_zh = "个人住房贷款"
category = "credit"
risk_grade = "R1"
value_weight = 8.0
min_age = 22
max_age = 60
min_income = 60000
residency = ["resident"]
prerequisites = ["current_account"]
life_stages = ["new_home", "young_family"]

[[product]]
id = "home_insurance"
name_en = "Home insurance"
name_zh = "家庭财产保险"
category = "insurance"
risk_grade = "R1"
value_weight = 2.0
min_age = 22
prerequisites = ["mortgage"]
life_stages = ["new_home"]

[[product]]
id = "equity_fund"
name_en = "Equity fund"
name_zh = "股票型基金"
category = "investment"
risk_grade = "R4"
value_weight = 4.0
min_age = 18
max_age = 70
life_stages = ["mid_career"]
"""

SNAPSHOTS = ("2026-08-31", "2026-09-30", "2026-10-31")

# (customer, product, snapshots held); see the module docstring.
_HOLDINGS = (
    ("C001", "current_account", SNAPSHOTS),
    ("C002", "current_account", SNAPSHOTS),
    ("C002", "mortgage", SNAPSHOTS[1:]),
    ("C002", "home_insurance", SNAPSHOTS[2:]),
    ("C003", "current_account", SNAPSHOTS),
    ("C003", "equity_fund", SNAPSHOTS),
    ("C004", "current_account", SNAPSHOTS),
    ("C004", "credit_card", SNAPSHOTS),
    ("C004", "mortgage", SNAPSHOTS),
    ("C004", "home_insurance", SNAPSHOTS),
    ("C005", "current_account", SNAPSHOTS[1:]),  # joined in September
    ("C005", "credit_card", SNAPSHOTS[2:]),
    ("C006", "current_account", SNAPSHOTS),
    ("C006", "credit_card", SNAPSHOTS),
    ("C006", "equity_fund", SNAPSHOTS[2:]),
)


@pytest.fixture
def tiny_catalog_toml() -> str:
    """The tiny catalog's TOML text, for tests that corrupt it."""
    return TINY_CATALOG_TOML


@pytest.fixture
def tiny_catalog() -> Catalog:
    """Five products with age, income, residency and prerequisite rules."""
    return parse_catalog(TINY_CATALOG_TOML, "<tiny catalog>")


@pytest.fixture(scope="session")
def life_stages() -> LifeStageRules:
    """The packaged life-stage rules."""
    return load_life_stages()


@pytest.fixture
def raw_customers() -> pd.DataFrame:
    """Six customers as an extract would hold them, one per life stage of interest.

    C001 student, C002 new_home, C003 retired, C004 young_family, C005 starting_out
    (non-resident, no consent), C006 mid_career.
    """
    return pd.DataFrame({
        "customer_id": ["C001", "C002", "C003", "C004", "C005", "C006"],
        "age": [20, 30, 70, 35, 27, 40],
        "income": [10000.0, 80000.0, 50000.0, 120000.0, 40000.0, 200000.0],
        "marital_status": ["single", "married", "widowed", "married", "single", "single"],
        "dependants": [0, 0, 0, 2, 0, 0],
        "tenure_months": [12, 48, 300, 90, 2, 150],
        "segment": ["mass", "mass", "mass", "affluent", "mass", "affluent"],
        "risk_grade": ["C2", "C3", "C1", "C4", "C3", "C5"],
        "residency": ["resident", "resident", "resident", "resident", "non_resident", "resident"],
        "consent_profiling": [True, True, True, True, False, True],
        "gender": ["F", "M", "F", "M", "F", "M"],
    })


@pytest.fixture
def raw_holdings() -> pd.DataFrame:
    """Monthly holdings of the six customers over three snapshots."""
    rows = [(c, p, s) for c, p, snaps in _HOLDINGS for s in snaps]
    return pd.DataFrame(rows, columns=["customer_id", "product_id", "snapshot_date"])


@pytest.fixture
def customers(raw_customers) -> pd.DataFrame:
    """The six customers, validated."""
    return validate_customers(raw_customers, "<tiny customers>")


@pytest.fixture
def tiny_bank(customers, raw_holdings, tiny_catalog) -> BankData:
    """Validated extracts of the six customers under the tiny catalog."""
    holdings = validate_holdings(raw_holdings, tiny_catalog, pd.Index(customers["customer_id"]))
    return BankData(customers=customers, holdings=holdings)


@pytest.fixture
def write_extracts():
    """Write customers and holdings frames to a folder as CSV or Parquet; returns the folder."""

    def write(folder: Path, customers: pd.DataFrame, holdings: pd.DataFrame,
              suffix: str = ".csv") -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name, frame in (("customers", customers), ("holdings", holdings)):
            path = folder / f"{name}{suffix}"
            if suffix == ".csv":
                frame.to_csv(path, index=False)
            else:
                frame.to_parquet(path, index=False)
        return folder

    return write


@pytest.fixture
def csv_bank_dir(tmp_path, raw_customers, raw_holdings, write_extracts) -> Path:
    """A data folder with customers.csv and holdings.csv."""
    return write_extracts(tmp_path / "csv", raw_customers, raw_holdings, ".csv")


@pytest.fixture
def parquet_bank_dir(tmp_path, raw_customers, raw_holdings, write_extracts) -> Path:
    """A data folder with the same extracts as customers.parquet and holdings.parquet."""
    return write_extracts(tmp_path / "parquet", raw_customers, raw_holdings, ".parquet")


@pytest.fixture(scope="session")
def packaged_catalog() -> Catalog:
    from recommender.data.catalog import load_catalog

    return load_catalog()


@pytest.fixture(scope="session")
def demo_bank(packaged_catalog, life_stages) -> BankData:
    """A small demo bank (1,500 customers, 4 months) shared by the slower tests. Do not mutate."""
    demo = generate(1500, 4, 11, packaged_catalog, life_stages)
    customers = validate_customers(demo.customers, "<demo customers>")
    holdings = validate_holdings(demo.holdings, packaged_catalog,
                                 pd.Index(customers["customer_id"]), "<demo holdings>")
    return BankData(customers=customers, holdings=holdings)


def _client_with_key(app, role: str = "admin"):
    """A test client of ``app`` sending a new key of ``role``, added to the app's database."""
    key, _ = create_key(app.extensions[KEYS_EXTENSION].database, role, name=f"test {role}")
    app.extensions[KEYS_EXTENSION].refresh()  # now, not within the store's second
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {key}"
    return client


@pytest.fixture(scope="session")
def client_with_key():
    """``client_with_key(app, role="admin")``: a test client that authenticates as ``role``."""
    return _client_with_key


@pytest.fixture(scope="session")
def served_demo_bank(demo_bank, packaged_catalog, life_stages, tmp_path_factory) -> dict:
    """``demo_bank`` written to disk with a hybrid model trained on it (no evaluation, well
    under a second): ``{"DATA_DIR": ..., "MODELS_DIR": ...}`` for ``create_app``. Give each app
    its own ``STATE_DIR``, and write nothing into these folders."""
    from recommender.data.catalog import catalog_text
    from recommender.data.extracts import load_bank, write_bank
    from recommender.data.life_stages import life_stages_text
    from recommender.ranking.config import TrainConfig
    from recommender.ranking.training import train

    root = tmp_path_factory.mktemp("served_demo_bank")
    write_bank(demo_bank, root / "data")
    bank = load_bank(root / "data", packaged_catalog)
    (cat_text, _), (st_text, _) = catalog_text(), life_stages_text()
    train(bank, packaged_catalog, life_stages, TrainConfig(ranker="hybrid"), root / "models",
          cat_text, st_text, run_evaluation=False)
    return {"DATA_DIR": str(root / "data"), "MODELS_DIR": str(root / "models")}


# ----------------------------------------------------------------- the stores' databases


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the session (``tests/postgres_server.py``), on a unix
    socket in a folder of its own. Without the server binaries the tests that need it skip,
    saying so, except under ``make test`` (NBO_REQUIRE_POSTGRES=1), which installs them: there
    they fail."""
    from postgres_server import PostgresServer, server_binaries

    if server_binaries() is None:
        if os.environ.get("NBO_REQUIRE_POSTGRES"):
            pytest.fail("NBO_REQUIRE_POSTGRES=1 but PostgreSQL server binaries (initdb, pg_ctl) "
                        "not found: `make postgres` installs Debian's postgresql package")
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's "
                    "postgresql package or `make postgres`")
    server = PostgresServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A new empty database on the session's server, of a name no other test uses."""
    return postgres_server.create_database(f"test_{uuid.uuid4().hex[:16]}")


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A new empty database on each backend: an SQLite file, then one on a real PostgreSQL
    server (asked for only here, so SQLite runs even where PostgreSQL is missing)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nbo.db'}"
    return request.getfixturevalue("postgres_url")
