"""The campaign config: schema validation with defaults, semantic checks and seeds.

One function, :func:`load_config`, turns what a user wrote into a complete, checked campaign, so the
Snakefile, the command line and the training jobs all see the same thing. Errors are
:class:`ConfigError` with a message that names the key and the fix. Which keys change what a
campaign's results mean is :mod:`hpsrl.campaign.identity`'s.
"""

from __future__ import annotations

import copy
import datetime
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from hpsrl import HpsrlError
from hpsrl.campaign.genes import SearchSpace

if TYPE_CHECKING:
    import jsonschema

SCHEMA_VERSION = 1

NATURAL_DIRECTIONS = {
    "return": "maximize",
    "steps_to_threshold": "minimize",
    "train_seconds": "minimize",
}

# Independent seed streams: SeedSequence(root, spawn_key=(STREAM, ...)).
STREAM_GA = 0
STREAM_TRAIN = 1
STREAM_EVAL = 2
STREAM_RETEST_TRAIN = 3
STREAM_RETEST_EVAL = 4


class ConfigError(HpsrlError, ValueError):
    """A campaign config that cannot run; the message says what to change."""


def one_line(message: str) -> str:
    """An error message as the one line it is meant to be: a line break that came in with what
    a user wrote (a key, a path, a value) is shown as \\n, so that no message spans lines."""
    return message.replace("\r", "\\r").replace("\n", "\\n")


def schema() -> dict[str, Any]:
    text = resources.files("hpsrl").joinpath("schemas/config.schema.yaml").read_text()
    return yaml.safe_load(text)


@functools.cache  # `snakemake compare` checks a config per strategy and search seed
def _validator() -> jsonschema.protocols.Validator:
    """The schema's validator, filling in defaults (it never changes the schema itself)."""
    return _validator_with_defaults()(schema())


def _validator_with_defaults() -> type:
    """A Draft 2020-12 validator that fills in each property's `default` (the jsonschema recipe)
    and turns whole floats where the schema wants an integer into integers: JSON Schema counts
    4.0 as an integer, YAML reads `steps: 1.0e5` as a float, and numpy refuses a float count."""
    import jsonschema  # not on import: most hpsrl processes (train, collect) load no config

    base = jsonschema.Draft202012Validator
    validate_properties = base.VALIDATORS["properties"]

    def wants_integer(subschema: Mapping[str, Any]) -> bool:
        options = [subschema, *subschema.get("oneOf", [])]
        return any(option.get("type") == "integer" for option in options)

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
                value = instance.get(name)
                if isinstance(value, float) and value.is_integer() and wants_integer(subschema):
                    instance[name] = int(value)
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def _schema_error_message(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    hint = ""
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        hint = f" Allowed keys here: {', '.join(allowed)}."
    elif error.validator == "enum":
        hint = f" Choose one of: {', '.join(map(str, error.validator_value))}."
    elif error.validator == "pattern" and "patternHint" in error.schema:  # the schema's words
        hint = f" {error.schema['patternHint'][0].upper()}{error.schema['patternHint'][1:]}."
    return f"config key '{key}': {error.message}.{hint}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file, turning parse errors into a ConfigError naming the file and line.

    The file is read as bytes, so that PyYAML detects its encoding and reports text that is not
    UTF-8 as a YAML error with its position, rather than a UnicodeDecodeError."""
    path = Path(path)
    try:
        with path.open("rb") as stream:
            data = yaml.safe_load(stream)
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path} does not exist") from e
    except OSError as e:  # a folder, no permission, a name too long
        raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(e, path)}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of keys, got {type(data).__name__}"
        )
    return data


def _yaml_problem(error: yaml.YAMLError, path: Path) -> str:
    """A PyYAML error on one line, starting with where it is (PyYAML's own text spreads the
    problem, its context and their positions over several lines)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        text = f"line {mark.line + 1}, column {mark.column + 1}: {error.problem}"
        if error.context:
            context = error.context_mark
            where = f" at line {context.line + 1}" if context is not None else ""
            text += f" ({error.context}{where})"
        return text
    if isinstance(error, yaml.reader.ReaderError):  # bytes that are not text: a position
        line = path.read_bytes()[: error.position].count(b"\n") + 1
        if error.encoding == "unicode":  # PyYAML's name for text it decoded
            return f"line {line}: character U+{error.character:04X} is not allowed in YAML"
        return f"line {line}: byte {error.character:#04x} is not {error.encoding} text"
    return " ".join(str(error).split())


# Keys that were renamed or replaced: a config that still has one gets a message naming the new.
MOVED_KEYS = {
    "ga.elites": (
        "search.racing: the top configurations re-trained on fresh seeds each generation, the "
        "GA's elites, for every strategy (ga.elites E of a population P is search.racing "
        "{top: E, share: E/P})"
    ),
}


# Keys that moved to a section whose name says what they are: the budget of every search strategy
# (not the GA's alone) and the held-out test (not the report). A user's config that still has one
# is refused with the new key; a config stored with results before the move is read with the new
# names (upgraded_config), so that those campaigns resume and report as before.
RENAMED_KEYS = {
    "ga.population": "budget.population",
    "ga.generations": "budget.generations",
    "report.retest_seeds": "retest.seeds",
}
# Sections that held nothing but renamed keys: dropped from a stored config once emptied.
RETIRED_SECTIONS = ("report",)


def _check_moved_keys(config: Mapping[str, Any]) -> None:
    for key, moved_to in MOVED_KEYS.items():
        parent, name = key_parent(dict(config), key)
        if isinstance(parent, Mapping) and name in parent:
            raise ConfigError(f"config key '{key}' is now {moved_to}; replace it")
    for old, new in RENAMED_KEYS.items():
        parent, name = key_parent(dict(config), old)
        if isinstance(parent, Mapping) and name in parent:
            section, new_name = new.split(".")
            value = json.dumps(parent[name])
            raise ConfigError(
                f"config key '{old}' moved to {new}: write `{section}: {{{new_name}: {value}}}` "
                f"instead of {old}"
            )
    for section in RETIRED_SECTIONS:
        if section in config:
            moved = ", ".join(
                f"{old} is now {new}"
                for old, new in RENAMED_KEYS.items()
                if old.startswith(f"{section}.")
            )
            raise ConfigError(f"config section '{section}' is gone ({moved}); remove it")


def upgraded_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config stored with results, with today's key names: the RENAMED_KEYS it still has
    under their old names moved to the new ones (and RETIRED_SECTIONS dropped once empty).
    Every stored config is read through this, so that readers and comparisons see one layout
    and a campaign started before a rename resumes (its hash is that of the same config written
    with the new names). Returns a new dict."""
    out = copy.deepcopy(dict(config))
    for old, new in RENAMED_KEYS.items():
        old_section, old_name = old.split(".")
        new_section, new_name = new.split(".")
        parent = out.get(old_section)
        if not isinstance(parent, dict) or old_name not in parent:
            continue
        out.setdefault(new_section, {})[new_name] = parent.pop(old_name)
        if not parent and old_section in RETIRED_SECTIONS:
            del out[old_section]
    return out


# Where a value may be any number, infinities included: what the algorithm's own checks judge
# (max_grad_norm: .inf turns clipping off) and what the environment is given.
FREE_NUMBERS = ("fixed", "env.kwargs")


def _check_plain_data(value: Any, key: str = "") -> None:
    """Refuse what JSON cannot hold and numbers that are not numbers, naming the key: YAML also
    reads unquoted dates as dates, ``!!binary`` as bytes, ``!!set`` as sets and ``.nan`` or
    ``.inf`` as floats, which the schema's type checks would let through (NaN compares false
    with every bound) or json.dumps would fail on."""
    if isinstance(value, Mapping):
        for name, item in value.items():
            if not isinstance(name, (str, int, float, bool, type(None))):
                raise ConfigError(
                    f"config key '{key or '(top level)'}': the key {name!r} is a "
                    f"{type(name).__name__}; keys are names (quote it)"
                )
            _check_plain_data(item, f"{key}.{name}" if key else str(name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_plain_data(item, f"{key}.{index}")
    elif isinstance(value, float) and not math.isfinite(value):
        if not any(key == free or key.startswith(f"{free}.") for free in FREE_NUMBERS):
            raise ConfigError(f"config key '{key}': {value} is not a finite number; write one")
    elif isinstance(value, (datetime.date, datetime.time)):
        raise ConfigError(
            f"config key '{key}': {value} is a date (YAML reads an unquoted date as one); "
            "write a number, or quote it"
        )
    elif not isinstance(value, (str, int, float, bool, type(None))):
        raise ConfigError(
            f"config key '{key}': a {type(value).__name__} ({value!r}) cannot be a config "
            "value; write a number, a string, a list or a mapping"
        )


def load_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``raw`` against the schema, fill in defaults and check what a schema cannot.

    Returns a new dict (``raw`` is left as it is). Raises ConfigError.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"a config is a mapping of keys (campaign: ..., env: ...), not a {type(raw).__name__}"
        )
    _check_plain_data(raw)
    config = json.loads(json.dumps(raw))  # a deep copy of plain data
    _check_moved_keys(config)
    errors = sorted(_validator().iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_schema_error_message(errors[0]))
    for objective in config["objectives"]:
        objective.setdefault("direction", NATURAL_DIRECTIONS[objective["name"]])
        if objective["name"] == "steps_to_threshold" and "threshold" not in objective:
            raise ConfigError(
                "config key 'objectives': steps_to_threshold needs a 'threshold' "
                "(the return that counts as solved, e.g. threshold: 475 for CartPole-v1)"
            )
    names = [o["name"] for o in config["objectives"]]
    if len(set(names)) != len(names):
        raise ConfigError(f"config key 'objectives': each objective may appear once, got {names}")
    _check_racing(config)
    if config["search"]["strategy"] == "ga":  # the other strategies never read these keys
        _check_ga(config)
    config["genes"] = resolved_genes(config)
    _check_algorithm_fields(config, search_space(config))  # gene errors name the gene
    _check_inherit_weights(config)
    return config


def compared_variants(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The search variants of ``compare.strategies`` by name, each as the search keys it changes
    (a strategy name alone changes the strategy)."""
    variants: dict[str, dict[str, Any]] = {}
    for entry in config["compare"]["strategies"]:
        name, changes = (
            (entry, {"strategy": entry})
            if isinstance(entry, str)
            else (entry["name"], entry.get("search", {}))
        )
        if name in variants:
            raise ConfigError(
                f"config key 'compare.strategies': the name {name} appears twice; give each "
                "variant its own name"
            )
        variants[name] = changes
    return variants


def compared_campaigns(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The campaigns `snakemake compare` runs, by name: ``config`` with each search variant of
    its compare section (:func:`compared_variants`), on each search seed K (root seed
    ``seed + K``)."""
    compare = config["compare"]
    campaigns = {}
    for variant, changes in compared_variants(config).items():
        for k in range(compare["search_seeds"]):
            campaign = copy.deepcopy(dict(config))
            campaign["campaign"] = compared_name(config, variant, k)
            campaign["seed"] = config["seed"] + k
            campaign["search"] = _merged(campaign["search"], changes)
            campaign["compare"]["variant"] = variant
            if campaign["search"].get("strategy") != "ga":  # the others train from scratch
                campaign["ga"]["inherit_weights"] = False
            try:
                campaigns[campaign["campaign"]] = load_config(campaign)
            except ConfigError as e:
                raise ConfigError(f"compare.strategies, {variant}: {e}") from None
    return campaigns


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` on top, nested mappings merged key by key."""
    out = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def compared_name(config: Mapping[str, Any], variant: str, search_seed: int) -> str:
    """The campaign that runs ``variant`` of ``config``'s compare section on one search seed."""
    return f"{config['campaign']}-{variant}-s{search_seed}"


def shared_first_generations(config: Mapping[str, Any]) -> dict[str, str]:
    """The campaigns of `snakemake compare` that copy their generation 0 from another, by name:
    every variant samples generation 0 alike from the search seed, so the first variant's
    campaign on each search seed trains it and the others' training jobs copy its results
    (where they are the same training: see hpsrl.campaign.storage.is_same_training). Variants with
    successive-halving rungs train generation 0 otherwise (more configurations, fewer steps),
    so they train their own and copy from none."""
    campaigns = compared_campaigns(config)
    k = range(config["compare"]["search_seeds"])
    plain = [
        variant
        for variant in compared_variants(config)
        if campaigns[compared_name(config, variant, 0)]["search"]["fidelity"]["rungs"] == 1
    ]
    if not plain:
        return {}
    first, *others = plain
    return {
        compared_name(config, variant, seed): compared_name(config, first, seed)
        for variant in others
        for seed in k
    }


def _check_racing(config: Mapping[str, Any]) -> None:
    """Each generation needs room for new configurations, on every rung."""
    from hpsrl.campaign.halving import check_fidelity

    share, population = config["search"]["racing"]["share"], config["budget"]["population"]
    raced = round(share * population)
    if raced >= population:
        raise ConfigError(
            f"config key 'search.racing.share': {share} of a population of {population} leaves "
            "no room for new configurations; use a smaller share"
        )
    problem = check_fidelity(config, population - raced)
    if problem:
        raise ConfigError(f"config key 'search.fidelity': {problem}")
    if config["search"]["fidelity"]["rungs"] > 1 and config["ga"]["inherit_weights"]:
        raise ConfigError(
            "config keys 'search.fidelity' and 'ga.inherit_weights': rungs continue a training "
            "from its checkpoint, inherited weights start one from a parent's; use one of them "
            "(search.fidelity.rungs: 1, or ga.inherit_weights: false)"
        )


def _check_ga(config: Mapping[str, Any]) -> None:
    tournament_size, population = config["ga"]["tournament_size"], config["budget"]["population"]
    if tournament_size > population:
        raise ConfigError(
            f"config key 'ga.tournament_size': {tournament_size} is larger than the "
            f"population ({population}, budget.population)"
        )


def default_genes(algorithm: str) -> dict[str, dict[str, Any]]:
    """The genes ``algorithm`` searches unless a config says otherwise (its module's ``GENES``)."""
    from hpsrl.agents import hyperparameters_of

    try:
        return copy.deepcopy(getattr(hyperparameters_of(algorithm), "GENES", {}))
    except ValueError as e:
        raise ConfigError(f"config key 'algorithm': {e}") from None


def resolved_genes(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The config's genes (in its order), then the algorithm's default genes it does not mention
    and does not fix. A gene set to null is not searched; it stays in the result as null, so that
    resolving a resolved config changes nothing (``snakemake compare`` does). With
    ga.inherit_weights the default genes in the algorithm's ``ARCHITECTURE_FIELDS`` are null."""
    listed = config["genes"]
    overlap = sorted(
        name for name, gene in listed.items() if gene is not None and name in config["fixed"]
    )
    if overlap:
        raise ConfigError(
            f"config keys 'genes' and 'fixed' both set {overlap}: a hyperparameter is either "
            "searched (genes) or held constant (fixed); remove it from one of them"
        )
    genes = dict(listed)
    from hpsrl.agents import hyperparameters_of

    # With weight inheritance every individual shares one network (see _check_inherit_weights):
    # default genes that would change it are left out, as nulls, so that the strategies that
    # snakemake compare runs without inheritance search the same genes.
    defaults = default_genes(config["algorithm"])  # ConfigError for an unknown algorithm
    shared_network = config["ga"]["inherit_weights"]
    architecture = getattr(hyperparameters_of(config["algorithm"]), "ARCHITECTURE_FIELDS", ())
    for name, gene in defaults.items():
        if name not in listed and name not in config["fixed"]:
            genes[name] = None if shared_network and name in architecture else gene
    if all(gene is None for gene in genes.values()):
        raise ConfigError(
            f"config key 'genes': nothing left to search (algorithm {config['algorithm']}'s "
            "default genes are all fixed or set to null); add a gene, e.g. "
            "learning_rate: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}"
        )
    return genes


def search_space(config: Mapping[str, Any]) -> SearchSpace:
    try:
        return SearchSpace.from_config(
            {name: gene for name, gene in config["genes"].items() if gene is not None}
        )
    except ValueError as e:
        raise ConfigError(f"config key 'genes': {e}") from e


def _check_algorithm_fields(config: Mapping[str, Any], space: SearchSpace) -> None:
    """Genes and fixed values must be hyperparameters of the algorithm."""
    from hpsrl.agents import make_hyperparameters

    sample = space.sample(np.random.default_rng(0))
    try:
        make_hyperparameters(config["algorithm"], {**config["fixed"], **sample})
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"config keys 'genes'/'fixed' for algorithm '{config['algorithm']}': {e}"
        ) from e


def _check_inherit_weights(config: Mapping[str, Any]) -> None:
    """ga.inherit_weights needs the ga strategy, an algorithm that can start from given weights
    (``initial_weights`` of its ``train``) and a network every individual shares: none of the
    algorithm's ``ARCHITECTURE_FIELDS`` may be a gene."""
    if not config["ga"]["inherit_weights"]:
        return
    strategy = config["search"]["strategy"]
    if strategy != "ga":
        raise ConfigError(
            f"config key 'ga.inherit_weights': children inherit weights from their parents, but "
            f"search.strategy {strategy} has no parents (only ga does); set search.strategy: ga "
            "or ga.inherit_weights: false"
        )
    from hpsrl.agents import hyperparameters_of

    # An algorithm whose train takes initial_weights names its ARCHITECTURE_FIELDS (a test checks)
    architecture = getattr(hyperparameters_of(config["algorithm"]), "ARCHITECTURE_FIELDS", None)
    if architecture is None:
        raise ConfigError(
            f"config key 'ga.inherit_weights': algorithm {config['algorithm']} cannot start "
            "training from inherited weights; set ga.inherit_weights: false"
        )
    searched = [name for name in search_space(config).names if name in architecture]
    if searched:
        raise ConfigError(
            f"config key 'ga.inherit_weights': genes {searched} change the network's shape or "
            "function, so a child's network could not take its parent's weights; move them from "
            "'genes' to 'fixed' (one value for every individual), or set ga.inherit_weights: false"
        )


def key_parent(config: dict[str, Any], key: str) -> tuple[dict[str, Any], str]:
    """The dict that holds dotted ``key`` (an empty one if a section is missing), and its name:
    ``key_parent(config, "ga.generations")`` is ``(config["ga"], "generations")``."""
    *sections, name = key.split(".")
    parent = config
    for section in sections:
        parent = parent.get(section, {})
    return parent, name


@dataclass(frozen=True)
class SeedPlan:
    """Derives every seed of a campaign from its root seed."""

    root: int

    def generator(self, *key: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self.root, spawn_key=key))

    def seeds(self, stream: int, batch: int, individuals: int, per_individual: int) -> np.ndarray:
        """(individuals, per_individual) uint32 seeds, one stream per (batch, individual, k)."""
        out = np.empty((individuals, per_individual), dtype=np.uint32)
        for i in range(individuals):
            for k in range(per_individual):
                ss = np.random.SeedSequence(self.root, spawn_key=(stream, batch, i, k))
                out[i, k] = ss.generate_state(1)[0]
        return out


def check_environment(config: Mapping[str, Any]) -> str:
    """Make the campaign's environment once and check the algorithm can act in it.

    Returns the action kind. Raises ConfigError naming the key and the fix (unknown id, failed
    import, missing optional dependency, an algorithm for other actions).
    """
    from hpsrl.agents import ACTION_KINDS
    from hpsrl.envs.spec import EnvConfigError, EnvSpec, action_kind

    try:
        env = EnvSpec.from_config(config["env"])
        env.check()
        single = env.make()
        kind = action_kind(single.action_space)
        single.close()
    except EnvConfigError as e:
        raise ConfigError(f"config key 'env': {e}") from e
    except Exception as e:  # the environment's own code (or its module's) refused its kwargs
        problem = " ".join(f"{type(e).__name__}: {e}".split())
        raise ConfigError(
            f"config key 'env': making {config['env']['id']} with env.kwargs "
            f"{config['env']['kwargs']} failed ({problem}); fix env.kwargs or the environment"
        ) from e
    wanted = ACTION_KINDS[config["algorithm"]]
    if kind not in wanted:
        raise ConfigError(
            f"config key 'algorithm': {config['algorithm']} needs {' or '.join(sorted(wanted))} "
            f"actions, but {env.id} has {kind} actions; choose an algorithm for {kind} actions"
        )
    return kind


def readable_config_file(path: str | Path) -> str:
    """``path``, after checking it parses as a YAML mapping: for the Snakefile's configfile, whose
    own parse error names neither the file nor the line. Exits with one message otherwise."""
    try:
        load_yaml(path)
    except ConfigError as e:
        raise SystemExit(one_line(f"hpsrl: {e}")) from None
    return str(path)
