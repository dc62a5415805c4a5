"""Training configuration: defaults, TOML loading, unknown keys and bad values refused."""

import pytest

from recommender.exceptions import ConfigError
from recommender.ranking import config as config_module
from recommender.ranking.config import AcquisitionConfig, CFConfig, TrainConfig
from recommender.ranking.training import with_overrides


def test_defaults_are_valid_and_reproducible():
    """The defaults need no file: ALS on binary holdings with a fixed seed, MAP@5."""
    config = TrainConfig()
    assert (config.cf.kind, config.cf.weighting, config.cf.random_state) == ("als", "binary", 42)
    assert config.cf.factors >= 1 and config.cf.iterations >= 1
    assert (config.cf_weight, config.prior_smoothing, config.eval_k) == (1.0, 50.0, 5)
    assert TrainConfig() == config


def test_to_dict_and_from_dict_round_trip():
    """The manifest stores to_dict(); loading a model rebuilds the same config from it."""
    config = TrainConfig(cf=CFConfig(kind="item_knn", neighbours=5), cf_weight=0.5, eval_k=3)
    as_dict = config.to_dict()
    assert as_dict["cf"]["kind"] == "item_knn" and as_dict["eval_k"] == 3
    assert TrainConfig.from_dict(as_dict) == config


def test_from_toml(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text('cf_weight = 0.0\neval_k = 10\n\n[cf]\nkind = "item_knn"\n'
                    'weighting = "months_held"\nneighbours = 7\n', encoding="utf-8")
    config = TrainConfig.from_toml(path)
    assert config.cf_weight == 0.0 and config.eval_k == 10
    assert config.cf.kind == "item_knn" and config.cf.neighbours == 7
    assert config.cf.weighting == "months_held"
    assert config.cf.factors == CFConfig().factors  # untouched keys keep their defaults


@pytest.mark.parametrize(("text", "expected"), [
    ("cf_wieght = 1.0\n",
     r"unknown keys \['cf_wieght'\]; allowed: \['acquisition', 'cf', 'cf_weight'"),
    ("[cf]\nfactor = 8\n", r"\[cf\]: unknown keys \['factor'\]"),
    ('cf = "als"\n', r"\[cf\] must be a table"),
    ("cf_weight = \n", "not valid TOML"),
])
def test_bad_toml_files(tmp_path, text, expected):
    path = tmp_path / "train.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=expected) as info:
        TrainConfig.from_toml(path)
    assert str(path) in str(info.value)


def test_missing_toml_file(tmp_path):
    with pytest.raises(ConfigError, match="training config file not found"):
        TrainConfig.from_toml(tmp_path / "nope.toml")


@pytest.mark.parametrize(("values", "expected"), [
    ({"kind": "svd"}, r"cf.kind: must be one of \('als', 'item_knn'\), got 'svd'"),
    ({"weighting": "tenure"}, "cf.weighting: must be one of"),
    ({"factors": 0}, "cf.factors: must be at least 1"),
    ({"factors": 4.0}, "cf.factors: must be an integer, got 4.0"),
    ({"factors": True}, "cf.factors: must be an integer, got True"),
    ({"iterations": 0}, "cf.iterations: must be at least 1"),
    ({"neighbours": 0}, "cf.neighbours: must be at least 1"),
    ({"random_state": "42"}, "cf.random_state: must be an integer"),
    ({"regularization": -0.1}, "cf.regularization: must not be negative"),
    ({"alpha": 0}, "cf.alpha: must be positive"),
])
def test_bad_cf_values(values, expected):
    with pytest.raises(ConfigError, match=expected):
        CFConfig(**values)


@pytest.mark.parametrize(("value", "expected"), [
    (-1, "acquisition.num_threads: must not be negative"),
    (2.0, "acquisition.num_threads: must be an integer, got 2.0"),
    (True, "acquisition.num_threads: must be an integer, got True"),
    ("4", "acquisition.num_threads: must be an integer, got '4'"),
])
def test_bad_num_threads(value, expected):
    with pytest.raises(ConfigError, match=expected):
        AcquisitionConfig(num_threads=value)


def test_num_threads_defaults_to_the_available_cpus_and_loads_from_toml(tmp_path):
    assert AcquisitionConfig().num_threads == 0  # 0 = the CPUs this process may use
    path = tmp_path / "train.toml"
    path.write_text("[acquisition]\nnum_threads = 3\n", encoding="utf-8")
    assert TrainConfig.from_toml(path).acquisition.num_threads == 3


def test_available_cpus_reads_the_affinity_mask_else_the_cpu_count(monkeypatch):
    monkeypatch.setattr(config_module.os, "sched_getaffinity", lambda pid: {0, 2, 5},
                        raising=False)
    monkeypatch.setattr(config_module.os, "cpu_count", lambda: 64)
    assert config_module.available_cpus() == 3  # a container or taskset narrows it
    monkeypatch.delattr(config_module.os, "sched_getaffinity")
    assert config_module.available_cpus() == 64
    monkeypatch.setattr(config_module.os, "cpu_count", lambda: None)
    assert config_module.available_cpus() == 1


@pytest.mark.parametrize(("values", "expected"), [
    ({"cf_weight": -1.0}, "cf_weight: must not be negative"),
    ({"prior_smoothing": -5.0}, "prior_smoothing: must not be negative"),
    ({"eval_k": 0}, "eval_k: must be a positive integer"),
    ({"eval_k": 2.5}, "eval_k: must be a positive integer"),
])
def test_bad_train_values(values, expected):
    with pytest.raises(ConfigError, match=expected):
        TrainConfig(**values)


@pytest.mark.parametrize("values", [{"cf_weight": "1.0"}, {"cf": {"regularization": "0.1"}}])
def test_text_where_a_number_belongs_is_a_config_error(values):
    with pytest.raises(ConfigError):
        TrainConfig.from_dict(values)


def test_boolean_eval_k_is_refused():
    with pytest.raises(ConfigError, match="eval_k"):
        TrainConfig(eval_k=True)


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        TrainConfig().cf_weight = 2.0  # type: ignore[misc]


def test_with_overrides_changes_only_given_cf_values():
    base = TrainConfig(cf_weight=0.3)
    changed = with_overrides(base, kind="item_knn", factors=None)
    assert changed.cf.kind == "item_knn" and changed.cf.factors == CFConfig().factors
    assert changed.cf_weight == 0.3
    assert with_overrides(base, kind=None) is base
    with pytest.raises(ConfigError, match="cf.factors"):
        with_overrides(base, factors=0)
