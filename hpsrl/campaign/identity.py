"""Campaign identity: which config keys change what a campaign's results mean.

Results made under one config are mixed only with results made under the same config, up to the
keys that do not change what they mean (the generation budget, how training is cut into jobs).
This module is the one place that says which keys those are, and every check that compares
configs asks it: continuing a campaign and reading result files as one campaign
(:func:`hpsrl.campaign.storage.check_campaign_matches` and ``check_one_campaign``), reusing
another campaign's training (:func:`trains_alike`) and comparing searches
(:func:`problem_differences`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from hpsrl.campaign.config import key_parent

# Keys that may change on an existing campaign without changing what its results mean.
# ga.generations: budget.generations's name in configs stored before it moved (config.RENAMED_KEYS),
# whose stored hashes left it out.
HASH_EXEMPT_KEYS = (
    "budget.generations",
    "ga.generations",
    "training.checkpoint",
    "training.individuals_per_job",
    "compare",
)

# Keys added after campaigns had been run: hashed only where set to something other than their
# default, so that a campaign whose stored config predates the key keeps its hash and continues.
HASHED_UNLESS_DEFAULT: dict[str, Any] = {
    "ga.inherit_weights": False,
    "search.fidelity": {"rungs": 1, "eta": 3},
}

# Config sections that say how a campaign searches, not how it trains one individual: campaigns
# that differ only in these train an individual of the same genes and seeds alike.
SEARCH_ONLY_SECTIONS = ("campaign", "results_dir", "search", "budget", "ga", "retest")

# What must be equal for searches to be compared on the same problem and budget (keys that do not
# change what results mean, such as training.individuals_per_job, may differ).
SAME_PROBLEM = ("env", "algorithm", "genes", "fixed", "training", "objectives", "budget.population")


def config_hash(config: Mapping[str, Any]) -> str:
    """A hash of everything that gives results their meaning (not of the generation budget)."""
    meaningful = copy.deepcopy(dict(config))
    for key in HASH_EXEMPT_KEYS:
        parent, name = key_parent(meaningful, key)
        parent.pop(name, None)
    for key, default in HASHED_UNLESS_DEFAULT.items():
        parent, name = key_parent(meaningful, key)
        if parent.get(name, default) == default:
            parent.pop(name, None)
    text = json.dumps(meaningful, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def same_campaign(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether results made under configs ``a`` and ``b`` mean the same (their hashes agree)."""
    return config_hash(a) == config_hash(b)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _is_under(key: str, sections: tuple[str, ...]) -> bool:
    """Whether dotted ``key`` is one of ``sections`` or inside one."""
    return any(key == section or key.startswith(f"{section}.") for section in sections)


def changed_keys(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two configs (ignoring the generation budget)."""
    a, b = _flatten(old), _flatten(new)
    for flat in (a, b):
        for key, default in HASHED_UNLESS_DEFAULT.items():
            flat.setdefault(key, default)
    return sorted(
        k for k in set(a) | set(b) if not _is_under(k, HASH_EXEMPT_KEYS) and a.get(k) != b.get(k)
    )


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """The keys in which two configs of different campaigns differ, for a message; where no
    key's value does, what differs is a default the package filled in."""
    return ", ".join(changed_keys(old, new) or ["(package defaults)"])


def trains_alike(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether configs ``a`` and ``b`` differ only in SEARCH_ONLY_SECTIONS, so that an individual
    of the same genes and seeds trains alike under both."""
    return all(_is_under(key, SEARCH_ONLY_SECTIONS) for key in changed_keys(a, b))


def problem_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """The keys of SAME_PROBLEM in which the searches of configs ``a`` and ``b`` differ (none:
    they can be compared)."""
    return [key for key in changed_keys(a, b) if _is_under(key, SAME_PROBLEM)]
