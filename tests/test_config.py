from __future__ import annotations

import copy
import datetime
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hpsrl.campaign.config import (
    ConfigError,
    SeedPlan,
    check_environment,
    load_config,
    load_yaml,
    search_space,
    upgraded_config,
)
from hpsrl.campaign.identity import config_hash
from hpsrl.campaign.storage import check_campaign_matches, read_population, write_population
from hpsrl.search.evolve import initial_population

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted([REPO / "config" / "config.yaml", *(REPO / "config" / "examples").glob("*.yaml")])


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_are_valid(path):
    config = load_config(load_yaml(path))
    assert config["budget"]["population"] >= 2
    assert all("direction" in o for o in config["objectives"])


def test_defaults_are_filled_in(tiny_config):
    del tiny_config["training"]["curve_points"]
    config = load_config(tiny_config)
    assert config["training"]["curve_points"] == 20
    assert config["ga"]["mutation_scale"] == 0.15
    assert config["training"]["aggregate"] == "mean"
    assert "curve_points" not in tiny_config["training"], "the input must not be modified"


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda c: c["budget"].update(population=1), ["budget.population"]),
        (lambda c: c["ga"].update(elites=2), ["ga.elites", "search.racing", "top: E"]),
        (
            lambda c: c.update(search={"racing": {"share": 0.9}}),
            ["search.racing.share", "no room", "smaller share"],
        ),
        (lambda c: c["training"].update(seeds=0), ["training.seeds"]),
        (lambda c: c.update(algorithm="a2c"), ["algorithm", "ppo", "dqn"]),
        (lambda c: c.update(gens=3), ["gens", "Allowed keys"]),
        (lambda c: c["genes"]["gamma"].update(low=1.0, high=0.9), ["gamma"]),
        (lambda c: c["genes"]["learning_rate"].update(low=0.0), ["learning_rate", "low"]),
        (lambda c: c["genes"]["activation"].update(choices=[]), ["activation"]),
        (
            lambda c: c["genes"].update(not_a_knob={"type": "int", "low": 1, "high": 3}),
            ["not_a_knob"],
        ),
        (lambda c: c["fixed"].update(gamma=0.9), ["gamma", "genes", "fixed"]),
        (lambda c: c["objectives"][1].pop("threshold"), ["threshold"]),
        # found by tests/test_fuzz.py: each crashed with a traceback before
        (
            lambda c: c.update(search={"racing": {"share": float("nan")}}),
            ["search.racing.share", "nan is not a finite number"],
        ),
        (lambda c: c.update(seed=datetime.date(2026, 1, 2)), ["'seed'", "date", "quote"]),
        (lambda c: c["genes"].update({"x": {1, 2}}), ["genes.x", "set"]),
        (lambda c: c.update(results_dir="runs/{x}"), ["results_dir", "braces"]),
    ],
)
def test_bad_configs_name_the_key(tiny_config, change, words):
    change(tiny_config)
    with pytest.raises(ConfigError) as info:
        load_config(tiny_config)
    for word in words:
        assert word in str(info.value)


def test_malformed_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("ga: {population: 4\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml"):
        load_yaml(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"seed: 1\n\tga: {}\n", "line 2, column 1: found character '\\t' that cannot start"),
        (b'seed: 1\ncampaign: "caf\xe9"\n', "line 2: byte 0xe9 is not utf-8 text"),
        (b'seed: 1\ncampaign: "a\x01"\n', "line 2: character U+0001 is not allowed in YAML"),
    ],
)
def test_yaml_errors_are_one_line_with_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert str(info.value).startswith(f"config file {path} is not valid YAML: {message}")
    assert "\n" not in str(info.value)


def test_a_folder_or_a_list_is_no_config(tmp_path):
    with pytest.raises(ConfigError, match="cannot be read: Is a directory"):
        load_yaml(tmp_path)
    with pytest.raises(ConfigError, match="a config is a mapping of keys"):
        load_config([1, 2])  # what hpsrl populate's --config-json could hold


def test_whole_floats_count_as_integers(tiny_config):
    # YAML reads 1.0e5 as a float; numpy refuses a float count (budget.population 4.0 crashed init)
    tiny_config["budget"]["population"] = 4.0
    tiny_config["training"].update(steps=2048.0, individuals_per_job=2.0)
    config = load_config(tiny_config)
    assert config["budget"]["population"] == 4 and type(config["budget"]["population"]) is int
    assert type(config["training"]["steps"]) is int
    assert type(config["training"]["individuals_per_job"]) is int
    tiny_config["budget"]["population"] = 4.5
    with pytest.raises(ConfigError, match=r"budget\.population"):
        load_config(tiny_config)


def test_an_environment_that_refuses_its_kwargs_is_a_config_error(tiny_config):
    tiny_config["env"]["kwargs"] = {"gravity": 1}
    with pytest.raises(ConfigError, match=r"config key 'env': making CartPole-v1 .*gravity"):
        check_environment(load_config(tiny_config))


def test_infinity_is_left_to_the_algorithm_where_it_means_something(tiny_config):
    tiny_config["fixed"]["max_grad_norm"] = float("inf")  # no gradient clipping
    assert load_config(tiny_config)["fixed"]["max_grad_norm"] == float("inf")


def test_hash_ignores_generation_budget_only(tiny_config):
    base = config_hash(load_config(tiny_config))
    tiny_config["budget"]["generations"] = 10
    assert config_hash(load_config(tiny_config)) == base
    tiny_config["training"]["steps"] = 2048
    assert config_hash(load_config(tiny_config)) != base


def test_seed_streams_are_derived_and_distinct():
    plan = SeedPlan(3)
    train = plan.seeds(1, 0, 4, 2)
    assert train.shape == (4, 2)
    assert (train == SeedPlan(3).seeds(1, 0, 4, 2)).all()
    assert len({int(s) for s in train.ravel()}) == 8
    assert not (train == plan.seeds(2, 0, 4, 2)).any(), "evaluation seeds must differ"
    assert not (train == plan.seeds(1, 1, 4, 2)).any(), "each generation gets fresh seeds"


def test_config_roundtrips_through_yaml(tiny_config):
    config = load_config(tiny_config)
    assert load_config(yaml.safe_load(yaml.safe_dump(config))) == config


# -- the algorithm's default genes ------------------------------------------------------------


def minimal(algorithm: str, env: str = "CartPole-v1") -> dict:
    return {"campaign": "c", "env": {"id": env}, "algorithm": algorithm}


@pytest.mark.parametrize("algorithm", ["ppo", "dqn"])
def test_a_config_without_genes_searches_the_algorithms_defaults(algorithm):
    from hpsrl.agents import get_algorithm

    config = load_config(minimal(algorithm))
    assert config["genes"] == get_algorithm(algorithm).GENES
    assert search_space(config).names == tuple(get_algorithm(algorithm).GENES)


def test_switching_algorithm_is_one_line():
    ppo, dqn = load_config(minimal("ppo")), load_config(minimal("dqn"))
    assert "clip_coef" in ppo["genes"] and "clip_coef" not in dqn["genes"]
    assert "epsilon" in dqn["genes"] and "epsilon" not in ppo["genes"]


def test_listed_genes_replace_add_and_leave_out_defaults():
    raw = minimal("ppo")
    raw["genes"] = {
        "vf_coef": {"type": "float", "low": 0.25, "high": 1.0},  # not a default gene: added
        "gamma": {"type": "float", "low": 0.9, "high": 0.99},  # a default gene: replaced
        "ent_coef": None,  # a default gene: left out
    }
    raw["fixed"] = {"hidden_sizes": [64, 64]}  # a default gene: held constant instead
    config = load_config(raw)
    names = search_space(config).names
    assert names[:2] == ("vf_coef", "gamma"), "listed genes come first, in their order"
    assert config["genes"]["gamma"]["low"] == 0.9
    assert "ent_coef" not in names and "hidden_sizes" not in names
    assert "learning_rate" in names and "activation" in names
    assert load_config(config) == config, "resolving a resolved config changes nothing"


def test_genes_of_another_algorithm_are_an_error_naming_them():
    raw = minimal("dqn")
    raw["genes"] = {"clip_coef": {"type": "float", "low": 0.1, "high": 0.3}}
    with pytest.raises(ConfigError, match=r"clip_coef.*valid names"):
        load_config(raw)


def test_nothing_left_to_search_is_an_error():
    from hpsrl.agents import get_algorithm

    raw = minimal("ppo")
    raw["genes"] = dict.fromkeys(get_algorithm("ppo").GENES)
    with pytest.raises(ConfigError, match="nothing left to search"):
        load_config(raw)


@pytest.mark.parametrize(
    "old, value, fix",
    [
        ("ga.population", 6, "budget.population: write `budget: {population: 6}`"),
        ("ga.generations", 9, "budget.generations: write `budget: {generations: 9}`"),
        ("report.retest_seeds", 0, "retest.seeds: write `retest: {seeds: 0}`"),
    ],
)
def test_a_renamed_key_is_refused_with_its_new_name(tiny_config, tmp_path, old, value, fix):
    section, name = old.split(".")
    tiny_config.setdefault(section, {})[name] = value
    with pytest.raises(ConfigError, match=f"config key '{old}' moved to ") as info:
        load_config(tiny_config)
    assert fix in str(info.value)
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    done = subprocess.run(
        [sys.executable, "-m", "hpsrl", "check", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr == f"hpsrl: error: {info.value}\n"


def test_a_retired_section_left_empty_is_refused_with_where_its_keys_went(tiny_config):
    tiny_config["report"] = {}
    with pytest.raises(ConfigError, match="config section 'report' is gone") as info:
        load_config(tiny_config)
    assert "report.retest_seeds is now retest.seeds" in str(info.value)


def old_layout(config: dict) -> dict:
    """``config`` as hpsrl stored it before budget and retest had sections of their own."""
    old = copy.deepcopy(config)
    old["ga"].update(old.pop("budget"))
    old["report"] = {"retest_seeds": old.pop("retest")["seeds"]}
    return old


def test_results_stored_with_the_old_key_names_read_and_resume(tiny_config, tmp_path):
    config = load_config(tiny_config)
    assert upgraded_config(old_layout(config)) == config
    population = initial_population(config)
    population.config = old_layout(config)  # what a campaign started before the rename stored
    path = tmp_path / "tiny" / "gen000" / "population.h5"
    write_population(path, population)
    stored = read_population(path).config
    assert stored == config and "report" not in stored
    assert config_hash(stored) == config_hash(config)
    check_campaign_matches(config, tmp_path / "tiny")  # the campaign goes on
    longer = load_config({**tiny_config, "budget": {"population": 4, "generations": 5}})
    check_campaign_matches(longer, tmp_path / "tiny")  # and may be extended
    other = load_config({**tiny_config, "retest": {"seeds": 5}})
    with pytest.raises(ConfigError, match=r"retest\.seeds changed"):
        check_campaign_matches(other, tmp_path / "tiny")
