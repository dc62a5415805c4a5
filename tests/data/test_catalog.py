"""The product catalog: the packaged one is complete; a bad one fails with a precise message."""

import re

import numpy as np
import pytest

from recommender.data.catalog import (
    Product,
    draft_catalog_text,
    load_catalog,
    parse_catalog,
)
from recommender.exceptions import CatalogError


def test_packaged_catalog_loads_with_all_products(packaged_catalog):
    """The demo bank's 21 products load, in file order, with a version."""
    assert len(packaged_catalog) == 21
    assert packaged_catalog.version == "cn-retail-2026.1"
    assert packaged_catalog.products[0].id == "current_account"
    assert packaged_catalog.ids.external_ids.tolist() == [p.id for p in packaged_catalog.products]


def test_packaged_products_have_risk_grades_and_bilingual_names(packaged_catalog):
    """Every product has a risk grade R1-R5 and a non-empty English and Chinese name."""
    for product in packaged_catalog.products:
        assert product.risk_grade in ("R1", "R2", "R3", "R4", "R5"), product.id
        assert 1 <= product.risk_level <= 5
        assert product.name_en.strip() and product.name("en") == product.name_en
        assert re.search(r"[\u4e00-\u9fff]", product.name_zh), product.id
        assert product.name("zh") == product.name_zh
    # equity funds are a high-risk product, current accounts the lowest
    assert packaged_catalog["equity_fund"].risk_level == 4
    assert packaged_catalog["current_account"].risk_grade == "R1"


def test_every_packaged_bundle_names_a_packaged_life_stage(packaged_catalog, life_stages):
    """Bundles and life-stage rules ship together; no bundle names a stage that does not exist."""
    stage_ids = {s.id for s in life_stages.stages}
    named = {stage for p in packaged_catalog.products for stage in p.life_stages}
    assert named and named <= stage_ids
    packaged_catalog.check_life_stages(sorted(stage_ids))  # does not raise
    for stage_id in stage_ids:
        assert packaged_catalog.bundle(stage_id), f"stage {stage_id} has an empty bundle"


def test_packaged_eligibility_values(packaged_catalog):
    """Spot-check the values the eligibility rules read."""
    mortgage = packaged_catalog["mortgage"]
    assert (mortgage.min_age, mortgage.max_age, mortgage.min_income) == (22, 60, 60000)
    assert mortgage.residency == ("resident",)
    assert mortgage.prerequisites == ("current_account",)
    assert packaged_catalog["current_account"].residency == ("resident", "non_resident")


def test_defaults_apply_to_optional_keys(tiny_catalog):
    """Keys left out of a product take the documented defaults."""
    account = tiny_catalog["current_account"]
    assert account.max_age == 200 and account.min_income == 0.0
    assert account.prerequisites == () and account.talking_points("en") == ()
    assert account.residency == ("resident", "non_resident")


def test_bundle_is_in_catalog_order(tiny_catalog):
    assert tiny_catalog.bundle("new_home") == ["mortgage", "home_insurance"]
    assert tiny_catalog.bundle("retired") == []


def test_prerequisite_matrix(tiny_catalog):
    """[i, j] is True exactly when product j requires product i."""
    matrix = tiny_catalog.prerequisite_matrix()
    pos = tiny_catalog.ids.position
    expected = np.zeros((5, 5), dtype=bool)
    expected[pos("current_account"), pos("credit_card")] = True
    expected[pos("current_account"), pos("mortgage")] = True
    expected[pos("mortgage"), pos("home_insurance")] = True
    np.testing.assert_array_equal(matrix, expected)


def test_column_gives_one_attribute_per_product(tiny_catalog):
    assert tiny_catalog.column("min_age").tolist() == [16, 18, 22, 22, 18]
    assert tiny_catalog.column("risk_grade").tolist() == ["R1", "R1", "R1", "R1", "R4"]


def test_unknown_product_lookup_raises(tiny_catalog):
    with pytest.raises(KeyError, match="gold_bar"):
        tiny_catalog["gold_bar"]


def test_products_are_immutable(tiny_catalog):
    with pytest.raises(AttributeError):
        tiny_catalog["mortgage"].min_age = 0  # type: ignore[misc]


@pytest.mark.parametrize(("old", "new", "expected"), [
    pytest.param('category = "credit"', 'category = "credit"\ncolour = "red"',
                 r"product #2 \('credit_card'\) has unknown keys \['colour'\]", id="unknown key"),
    pytest.param('category = "credit"\n', "",
                 r"product #2 \('credit_card'\) is missing required keys \['category'\]",
                 id="missing key"),
    pytest.param('name_en = "Credit card"\n', "",
                 r"product #2 \('credit_card'\) is missing required keys \['name_en'\]",
                 id="missing name"),
    pytest.param('name_zh = "信用卡"', 'name_zh = ""',
                 r"product #2 \('credit_card'\): name_zh must be a non-empty string",
                 id="empty name"),
    pytest.param('category = "credit"', "category = 3",
                 r"product #2 \('credit_card'\): category must be a non-empty string",
                 id="category not text"),
    pytest.param('risk_grade = "R4"', 'risk_grade = "R9"',
                 r"product #5 \('equity_fund'\): risk_grade 'R9' is not one of", id="risk grade"),
    pytest.param('prerequisites = ["mortgage"]', 'prerequisites = ["mortgag"]',
                 r"product 'home_insurance' has unknown prerequisites \['mortgag'\]",
                 id="unknown prerequisite"),
    pytest.param('id = "equity_fund"', 'id = "mortgage"',
                 r"duplicate product ids \['mortgage'\]", id="duplicate id"),
    pytest.param('min_age = 22\nmax_age = 60', 'min_age = 61\nmax_age = 60',
                 r"product #3 \('mortgage'\): min_age 61 exceeds max_age 60", id="age range"),
    pytest.param("min_income = 36000", 'min_income = "lots"',
                 r"credit_card.*min_income must be a number", id="non-numeric"),
    pytest.param("value_weight = 8.0", "value_weight = -1",
                 r"mortgage.*value_weight must not be negative", id="negative"),
    pytest.param('residency = ["resident"]', 'residency = ["martian"]',
                 r"mortgage.*residency \['martian'\]", id="residency"),
    pytest.param('prerequisites = ["mortgage"]', 'prerequisites = ["home_insurance"]',
                 r"product 'home_insurance' requires itself", id="self prerequisite"),
    pytest.param('currency = "CNY"', 'currency = "CNY"\nowner = "me"',
                 r"unknown top-level keys \['owner'\]", id="top-level key"),
    pytest.param('currency = "CNY"', 'currency = "CNY"\n[[product]\n', "not valid TOML",
                 id="invalid TOML"),
])
def test_bad_catalogs_raise_catalog_error_naming_the_problem(tiny_catalog_toml, old, new,
                                                             expected):
    """Each defect is reported as CatalogError naming the source, the product and the key."""
    assert old in tiny_catalog_toml
    with pytest.raises(CatalogError, match=expected) as info:
        parse_catalog(tiny_catalog_toml.replace(old, new, 1), "bank_catalog.toml")
    assert str(info.value).startswith("bank_catalog.toml: ")


def test_catalog_without_products_is_refused():
    with pytest.raises(CatalogError, match=r"no \[\[product\]\] entries"):
        parse_catalog('version = "empty"\n', "empty.toml")


def test_missing_catalog_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(CatalogError, match="catalog file not found") as info:
        load_catalog(missing)
    assert str(missing) in str(info.value)


def test_catalog_file_loads_and_names_itself_as_source(tmp_path, tiny_catalog_toml):
    path = tmp_path / "catalog.toml"
    path.write_text(tiny_catalog_toml, encoding="utf-8")
    catalog = load_catalog(path)
    assert len(catalog) == 5 and catalog.version == "tiny-1" and catalog.source == str(path)
    bad = tmp_path / "bad.toml"
    bad.write_text(tiny_catalog_toml.replace('risk_grade = "R4"', 'risk_grade = "high"'),
                   encoding="utf-8")
    with pytest.raises(CatalogError, match=re.escape(str(bad))):
        load_catalog(bad)


def test_bundle_naming_an_unknown_stage_is_refused(tiny_catalog, tiny_catalog_toml, life_stages):
    """A typo in a bundle's stage would silently empty that bundle; it is an error instead."""
    tiny_catalog.check_life_stages([s.id for s in life_stages.stages])  # fine
    typo = parse_catalog(tiny_catalog_toml.replace('"new_home"]', '"new_hom"]'), "typo.toml")
    with pytest.raises(CatalogError, match=r"'home_insurance' names unknown life stages "
                                           r"\['new_hom'\]"):
        typo.check_life_stages([s.id for s in life_stages.stages])


def test_product_name_and_talking_points_by_language():
    product = Product("p", "Plan", "计划", "x", "R1", 1.0, talking_points_en=("a",),
                      talking_points_zh=("甲",))
    assert product.name("zh") == "计划" and product.name("en") == "Plan"
    assert product.talking_points("zh") == ("甲",) and product.talking_points("fr") == ("a",)


_MINIMAL = """
[[product]]
id = "savings"
name_en = "Savings account"
category = "deposit"
talking_points_en = ["Interest paid monthly"]

[[product]]
id = "fund"
name_en = "Bond fund"
name_zh = "债券基金"
category = "investment"
risk_grade = "R2"
value_weight = 3.0
"""


def test_a_product_needs_only_id_name_and_category(caplog):
    """A bank without Chinese names, risk grades or values: the documented defaults apply."""
    catalog = parse_catalog(_MINIMAL, "minimal.toml")
    savings, fund = catalog["savings"], catalog["fund"]
    assert savings.name_zh == "Savings account" and savings.name("zh") == "Savings account"
    assert savings.talking_points("zh") == ("Interest paid monthly",)
    assert savings.value_weight == 1.0
    # ungraded is the riskiest grade: offered only to customers of the highest tolerance
    assert savings.risk_grade == "R5" and savings.risk_level == 5
    assert catalog.column("risk_level").tolist() == [5, 2]
    assert (fund.name_zh, fund.risk_grade, fund.value_weight) == ("债券基金", "R2", 3.0)
    assert fund.talking_points("zh") == ()
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "minimal.toml" in warned[0] and "['savings']" in warned[0]


def test_draft_catalog_parses_with_one_product_per_id_sorted():
    ids = ["zeta", "alpha", 'odd "quoted" \\ id', "理财", "alpha"]
    text = draft_catalog_text(ids, "bank/holdings.csv")
    assert text.startswith("# Starting catalog") and "bank/holdings.csv" in text
    catalog = parse_catalog(text, "draft.toml")
    assert catalog.ids.external_ids.tolist() == sorted(set(ids))
    product = catalog["理财"]
    assert (product.name_en, product.name_zh, product.category) == ("理财", "理财", "unclassified")
    assert (product.risk_grade, product.value_weight, product.min_age, product.max_age,
            product.min_income) == ("R5", 1.0, 0, 200, 0.0)
    assert product.residency == ("resident", "non_resident")
    for key in ("risk_grade", "value_weight", "min_age", "max_age", "min_income", "residency"):
        assert text.count(f"\n{key} = ") == len(set(ids)), key  # written out, not implied


def test_draft_catalog_of_no_products_is_refused():
    with pytest.raises(CatalogError, match="no product ids in empty.csv"):
        draft_catalog_text([], "empty.csv")
