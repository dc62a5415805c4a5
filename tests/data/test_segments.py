"""Life stages: ordered rules, first match wins, protected attributes refused."""

import pandas as pd
import pytest

from recommender.data.life_stages import load_life_stages, parse_life_stages
from recommender.exceptions import ConfigError


def _people(*rows) -> pd.DataFrame:
    """Customers from (age, income, marital_status, dependants) tuples."""
    frame = pd.DataFrame(rows, columns=["age", "income", "marital_status", "dependants"])
    return frame.assign(tenure_months=24, segment="mass")


def test_packaged_rules_load_in_order(life_stages):
    assert [s.id for s in life_stages.stages] == [
        "student", "retired", "pre_retirement", "young_family", "established_family",
        "new_home", "starting_out", "mid_career",
    ]
    assert life_stages.stages[-1].when == ()
    assert life_stages["retired"].name("zh") == "退休养老"


@pytest.mark.parametrize(("person", "stage"), [
    ((20, 10000.0, "single", 0), "student"),
    ((24, 30000.0, "single", 0), "student"),  # both bounds inclusive
    ((20, 30001.0, "single", 0), "starting_out"),  # earns too much to be a student
    ((25, 10000.0, "single", 0), "starting_out"),
    ((70, 50000.0, "widowed", 0), "retired"),
    ((63, 90000.0, "married", 2), "retired"),  # retired wins over family (rule order)
    ((62, 90000.0, "married", 0), "pre_retirement"),
    ((52, 90000.0, "single", 0), "pre_retirement"),
    ((30, 80000.0, "single", 1), "young_family"),
    ((40, 80000.0, "married", 3), "young_family"),
    ((41, 80000.0, "married", 1), "established_family"),
    ((30, 80000.0, "married", 0), "new_home"),
    ((45, 80000.0, "married", 0), "new_home"),
    ((46, 80000.0, "married", 0), "mid_career"),
    ((27, 50000.0, "single", 0), "starting_out"),
    ((32, 50000.0, "divorced", 0), "starting_out"),
    ((40, 150000.0, "single", 0), "mid_career"),
])
def test_known_answer_stage_assignment(life_stages, person, stage):
    """Hand-made customers get the stage the packaged rules say, in rule order."""
    assert life_stages.assign_ids(_people(person)).tolist() == [stage]


def test_assignment_is_vectorised_and_gives_stage_positions(life_stages, customers):
    """The six fixture customers at once: codes are positions in the rule list."""
    codes = life_stages.assign(customers)
    assert codes.dtype.kind == "i" and (codes >= 0).all()
    assert life_stages.ids.to_external(codes).tolist() == [
        "student", "new_home", "retired", "young_family", "starting_out", "mid_career",
    ]


def test_gender_does_not_change_the_stage(life_stages, customers):
    """Protected attributes are carried for audits, never used: flipping gender changes nothing."""
    flipped = customers.assign(gender=customers["gender"].map({"F": "M", "M": "F"}))
    assert (life_stages.assign(flipped) == life_stages.assign(customers)).all()


_BASE = """
version = "t1"
[[stage]]
id = "young"
name_en = "Young"
name_zh = "年轻"
[stage.when]
age_max = 30

[[stage]]
id = "rest"
name_en = "Everyone else"
name_zh = "其他"
"""


def test_custom_rules_with_segment_and_tenure():
    rules = parse_life_stages("""
[[stage]]
id = "vip"
name_en = "VIP"
name_zh = "贵宾"
[stage.when]
segment = ["private", "affluent"]
tenure_min = 60

[[stage]]
id = "other"
name_en = "Other"
name_zh = "其他"
""", "custom.toml")
    people = pd.DataFrame({"age": [30, 30, 30], "income": [1.0, 1.0, 1.0],
                           "marital_status": ["single"] * 3, "dependants": [0, 0, 0],
                           "tenure_months": [60, 59, 120], "segment": ["affluent", "private",
                                                                        "mass"]})
    assert rules.assign_ids(people).tolist() == ["vip", "other", "other"]


def test_chinese_wording_defaults_to_the_english():
    """A bank without Chinese names writes only id and name_en (and the conditions)."""
    rules = parse_life_stages("""
[[stage]]
id = "young"
name_en = "Young"
description_en = "Under thirty"
[stage.when]
age_max = 30

[[stage]]
id = "rest"
name_en = "Everyone else"
description_zh = "其他客户"
""", "english.toml")
    young, rest = rules["young"], rules["rest"]
    assert (young.name("zh"), young.description("zh")) == ("Young", "Under thirty")
    assert (rest.name_zh, rest.description_en, rest.description("zh")) == (
        "Everyone else", "", "其他客户")
    assert rules.assign_ids(_people((30, 1.0, "single", 0), (31, 1.0, "single", 0))).tolist() == [
        "young", "rest"]


def test_gender_condition_is_refused():
    """Rules may not use protected attributes; the error says so."""
    text = _BASE.replace("age_max = 30", 'gender = ["F"]')
    with pytest.raises(ConfigError, match=r"stage #1 \('young'\): unknown condition 'gender'.*"
                                          r"protected attributes"):
        parse_life_stages(text, "rules.toml")


def test_last_stage_must_be_unconditional():
    """Otherwise some customers would get no stage at all."""
    text = _BASE + "[stage.when]\nage_min = 31\n"
    with pytest.raises(ConfigError, match="last stage 'rest' must have no conditions"):
        parse_life_stages(text, "rules.toml")


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('name_zh = "年轻"', 'name_zh = "年轻"\ncolour = "red"', r"stage #1 \('young'\) has unknown "
                                                             r"keys \['colour'\]"),
    ('name_en = "Young"\n', "", r"stage #1 \('young'\) needs a non-empty string 'name_en'"),
    ('name_zh = "年轻"', 'name_zh = ""', r"stage #1 \('young'\): name_zh must not be empty"),
    ('name_zh = "年轻"', "name_zh = 1", r"stage #1 \('young'\): name_zh must be a string"),
    ('id = "young"\n', "", r"stage #1 \('no id'\) needs a non-empty string 'id'"),
    ("age_max = 30", 'age_max = "thirty"', "age_max must be a number"),
    ("age_max = 30", 'marital_status = "married"', "marital_status must be a non-empty list"),
    ('id = "rest"', 'id = "young"', r"duplicate stage ids \['young'\]"),
    ('version = "t1"', 'version = "t1"\nextra = 1', r"unknown top-level keys \['extra'\]"),
    ('version = "t1"', "version = ", "not valid TOML"),
])
def test_bad_rules_raise_config_error(old, new, expected):
    assert old in _BASE
    with pytest.raises(ConfigError, match=expected):
        parse_life_stages(_BASE.replace(old, new, 1), "rules.toml")


def test_empty_rules_are_refused():
    with pytest.raises(ConfigError, match="no \\[\\[stage\\]\\] entries"):
        parse_life_stages('version = "x"\n', "rules.toml")


def test_rules_file_missing_and_present(tmp_path):
    with pytest.raises(ConfigError, match="life-stage rules file not found"):
        load_life_stages(tmp_path / "missing.toml")
    path = tmp_path / "stages.toml"
    path.write_text(_BASE, encoding="utf-8")
    rules = load_life_stages(path)
    assert rules.version == "t1" and rules.source == str(path)
    assert rules.assign_ids(_people((30, 1.0, "single", 0), (31, 1.0, "single", 0))).tolist() == [
        "young", "rest"]
