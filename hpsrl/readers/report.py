"""The campaign report: one self-contained HTML file of tables and plots (``hpsrl report``).

Static plots are PNGs embedded as base64; the interactive ones (hpsrl.readers.interactive) are
Plotly figures drawn by one inlined copy of plotly.js. So the single file can be mailed or opened
from a cluster's shared folder, offline. It reads whatever generations exist, so it works on a
campaign that is still running, with failed individuals (NaN objectives) and with one objective.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import yaml

# Figures are made through matplotlib's object API, never pyplot: no display, no global state.
# Figure.savefig renders PNGs with the Agg canvas.
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hpsrl.campaign.config import search_space
from hpsrl.campaign.evidence import pools_evidence
from hpsrl.campaign.genes import CategoricalGene, Gene, ListGene
from hpsrl.campaign.model import Generation
from hpsrl.campaign.paths import RETEST_BATCH, generation_files
from hpsrl.campaign.storage import read_generations, write_text_atomic
from hpsrl.readers import interactive
from hpsrl.readers.interactive import figure_html
from hpsrl.readers.optuna_export import campaign_trials
from hpsrl.readers.summary import best_summary, best_yaml, status_table
from hpsrl.search.evolve import generation_leader
from hpsrl.search.moo import best_value, better_words

CURVE_X_LABEL = "environment steps"
CURVE_Y_LABEL = "training return (mean of recent episodes)"
FAILED_COLOUR = "tab:red"
FAILED = -1  # the group of a failed individual's values in a gene plot


@dataclass
class Campaign:
    """The generations of a campaign found on disk, and its re-test if there is one."""

    folder: Path
    generations: list[Generation]
    retest: Generation | None

    @classmethod
    def read(cls, folder: str | Path) -> Campaign:
        folder = Path(folder)
        paths = generation_files(folder)
        retest_file = folder / f"{RETEST_BATCH}.h5"
        if retest_file.exists():  # read with the generations: one campaign's, checked together
            paths.append(retest_file)
        records = read_generations(paths)
        retest = records.pop() if paths[-1] == retest_file else None
        return cls(folder, records, retest)

    @property
    def config(self) -> dict[str, Any]:
        return self.generations[-1].config

    @property
    def batches(self) -> list[str]:
        return [gen.population.batch for gen in self.generations]

    @property
    def objectives(self) -> list[dict[str, Any]]:
        return self.config["objectives"]

    @cached_property
    def best(self) -> dict[str, Any]:
        """What ``hpsrl best`` says of the campaign (read once: it reads every generation)."""
        return best_summary(self.folder)

    @cached_property
    def individuals(self) -> interactive.Individuals:
        """Every individual, with the answer hpsrl best gives marked."""
        return interactive.Individuals.of(self.generations, self.best)


def objective_label(objective: dict[str, Any], config: dict[str, Any]) -> str:
    """An axis label with the objective's unit."""
    aggregate = config["training"]["aggregate"]
    labels = {
        "return": f"evaluation return ({aggregate} over seeds)",
        "steps_to_threshold": f"environment steps to reach return {objective.get('threshold')}",
        "train_seconds": f"training time per seed, s ({aggregate} over seeds)",
    }
    return labels.get(objective["name"], objective["name"])


# -- figures ------------------------------------------------------------------------------------


#: Legends beside the axes, never over the data: matplotlib's default placement ("best") searches
#: for the emptiest corner, which took seconds per figure on campaigns of thousands of individuals.
LEGEND_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.0, 1.0)}


def png_data_uri(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _generation_axis(ax: Axes, batches: Sequence[str], failed: Sequence[int] = ()) -> None:
    """Generations along x, at most about 12 labels; failures counted under their generation."""
    stride = max(1, len(batches) // 12 + (len(batches) % 12 > 0))
    ticks = list(range(0, len(batches), stride))
    labels = [
        batches[i] + (f"\n{failed[i]} failed" if len(failed) and failed[i] else "") for i in ticks
    ]
    ax.set_xticks(ticks, labels)
    ax.set_xlim(-0.6, len(batches) - 0.4)
    ax.set_xlabel("generation")


def objectives_figure(campaign: Campaign) -> Figure:
    """Per objective and generation: the spread of valid individuals (box), best and median."""
    objectives = campaign.objectives
    fig = Figure(figsize=(5.5 * len(objectives), 4.2), layout="constrained")
    axes = fig.subplots(1, len(objectives), squeeze=False)[0]
    failed = [int((~gen.ok).sum()) for gen in campaign.generations]
    for j, (ax, objective) in enumerate(zip(axes, objectives, strict=True)):
        values = [gen.objectives[gen.ok, j] for gen in campaign.generations]
        present = [g for g, v in enumerate(values) if v.size]
        if present:
            ax.boxplot(
                [values[g] for g in present],
                positions=present,
                widths=0.5,
                patch_artist=True,
                boxprops={"facecolor": "tab:blue", "alpha": 0.25},
                medianprops={"color": "tab:blue"},
            )
        best = [
            float(best_value(v, objective["direction"], skip_nan=True)) if v.size else np.nan
            for v in values
        ]
        median = [float(np.median(v)) if v.size else np.nan for v in values]
        ax.plot(range(len(values)), best, "o-", color="tab:green", label="best")
        ax.plot(range(len(values)), median, "s--", color="tab:blue", label="median")
        _generation_axis(ax, campaign.batches, failed)
        ax.set_ylabel(objective_label(objective, campaign.config))
        ax.set_title(f"{objective['name']} ({better_words(objective['direction'])})")
        ax.grid(alpha=0.3)
        spread = Patch(facecolor="tab:blue", alpha=0.25, label="quartiles, whiskers 1.5 IQR")
        ax.legend(handles=[*ax.get_lines()[-2:], spread], fontsize="small", **LEGEND_OUTSIDE)
    return fig


def _numeric_panel(
    ax: Axes,
    batches: Sequence[str],
    per_generation: Sequence[Sequence[tuple[float, int]]],
    log: bool,
    low: float,
    high: float,
    label: str,
) -> None:
    """Values per generation, jittered sideways. ``per_generation`` holds (value, group) pairs:
    the group is a list element's position (0 for a scalar gene), or FAILED for a value of a
    failed individual (drawn as a red cross)."""
    rng = np.random.default_rng(0)  # jitter only: the same picture every time
    # failed ones drawn last, over the others
    groups = sorted(
        {group for values in per_generation for _, group in values},
        key=lambda group: (group == FAILED, group),
    )
    elements = len([group for group in groups if group != FAILED]) > 1
    cmap = colormaps["tab10"]
    for group in groups:
        xs, ys = [], []
        for g, values in enumerate(per_generation):
            chosen = [value for value, of in values if of == group]
            xs += list(g + rng.uniform(-0.2, 0.2, len(chosen)))
            ys += chosen
        if group == FAILED:
            ax.scatter(xs, ys, s=30, marker="x", color=FAILED_COLOUR, label="failed individual")
        else:
            name = f"element {group + 1}" if elements else "individual"
            ax.scatter(xs, ys, s=22, color=cmap(group % 10), alpha=0.7, label=name)
    if log:
        ax.set_yscale("log")
    margin = (np.log10(high / low) if log else high - low) * 0.05
    ax.set_ylim(*((low / 10**margin, high * 10**margin) if log else (low - margin, high + margin)))
    ax.axhline(low, color="grey", lw=0.8, ls=":", label="gene bounds")
    ax.axhline(high, color="grey", lw=0.8, ls=":")
    _generation_axis(ax, batches)
    ax.set_ylabel(label + (" (log scale)" if log else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", **LEGEND_OUTSIDE)


def _share_panel(
    ax: Axes,
    batches: Sequence[str],
    per_generation: Sequence[Sequence[Any]],
    choices: Sequence[Any],
) -> None:
    """Stacked bars: the share of each choice in each generation."""
    bottom = np.zeros(len(per_generation))
    cmap = colormaps["tab10"]
    for c, choice in enumerate(choices):
        share = np.array(
            [
                sum(str(v) == str(choice) for v in values) / len(values) if values else 0.0
                for values in per_generation
            ]
        )
        ax.bar(range(len(batches)), share, bottom=bottom, color=cmap(c % 10), label=str(choice))
        bottom += share
    _generation_axis(ax, batches)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of the generation's individuals")
    ax.legend(fontsize="small", **LEGEND_OUTSIDE)


def gene_figure(campaign: Campaign, gene: Gene) -> Figure:
    """How one gene's values spread over each generation; a list gene also shows its length."""
    batches = campaign.batches
    generations = [(gen.population.individuals, gen.ok) for gen in campaign.generations]
    is_list = isinstance(gene, ListGene)
    fig = Figure(figsize=(11 if is_list else 6.5, 4), layout="constrained")
    axes = fig.subplots(1, 2 if is_list else 1, squeeze=False)[0]
    # Per generation, every value of the gene with its group: its position in the list, FAILED
    # for a failed individual's.
    if is_list:
        lengths = [[len(ind[gene.name]) for ind in individuals] for individuals, _ in generations]
        _share_panel(axes[0], batches, lengths, range(gene.min_length, gene.max_length + 1))
        axes[0].set_title(f"{gene.name}: length (number of elements)")
        axes[0].get_legend().set_title("length")
        element, ax, title = gene.element, axes[1], f"{gene.name}: element values"
        entries = [
            [
                (x, k if ok else FAILED)
                for ind, ok in zip(individuals, oks, strict=True)
                for k, x in enumerate(ind[gene.name])
            ]
            for individuals, oks in generations
        ]
    else:
        element, ax, title = gene, axes[0], f"{gene.name}: values per generation"
        entries = [
            [
                (ind[gene.name], 0 if ok else FAILED)
                for ind, ok in zip(individuals, oks, strict=True)
            ]
            for individuals, oks in generations
        ]
    if isinstance(element, CategoricalGene):
        values = [[value for value, _ in gen_entries] for gen_entries in entries]
        _share_panel(ax, batches, values, element.choices)
    else:
        _numeric_panel(ax, batches, entries, element.log, element.low, element.high, gene.name)
    ax.set_title(title)
    return fig


def _curves_panel(ax: Axes, steps: np.ndarray, curves: np.ndarray, seeds: np.ndarray) -> None:
    for k, curve in enumerate(curves):
        if np.isfinite(curve).any():
            ax.plot(steps, curve, marker=".", label=f"seed {k} ({int(seeds[k])})")
    ax.set_xlabel(CURVE_X_LABEL)
    ax.set_ylabel(CURVE_Y_LABEL)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # no curve where every seed failed
        ax.legend(fontsize="small")


#: Generations whose learning curves the report draws (the last ones): a panel each, and drawing
#: 100 panels took most of a 100-generation campaign's report.
CURVE_GENERATIONS = 12


def curves_figure(campaign: Campaign) -> Figure:
    """Each of the last CURVE_GENERATIONS generations' leader: its learning curve on each
    training seed."""
    gens = campaign.generations[-CURVE_GENERATIONS:]
    ncols = min(4, len(gens))
    nrows = -(-len(gens) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    for ax, gen in zip(axes, gens, strict=False):
        best = generation_leader(gen)
        if best is None:
            ax.text(0.5, 0.5, "every individual failed", ha="center", transform=ax.transAxes)
            ax.set_title(gen.population.batch)
            ax.axis("off")
            continue
        _curves_panel(
            ax,
            gen.results["curve_steps"],
            gen.results["curve_returns"][best],
            gen.population.train_seeds[best],
        )
        ax.set_title(f"{gen.population.batch}: best, individual {best}")
    for ax in axes[len(gens) :]:
        ax.set_visible(False)
    return fig


def retest_source(campaign: Campaign) -> tuple[Generation | None, int]:
    """The latest generation holding the re-tested individual (its genes at its recorded index),
    None if none does (a re-test planned before the campaign was extended), and that index."""
    assert campaign.retest is not None
    index = int(campaign.retest.population.parents[0, 0])
    genes = campaign.retest.population.individuals[0]
    found = [
        gen
        for gen in campaign.generations
        if index < len(gen.population) and gen.population.individuals[index] == genes
    ]
    return (found[-1] if found else None), index


def retest_figure(campaign: Campaign) -> Figure:
    """The re-tested individual: learning curves on the fresh seeds, and its evaluation returns
    per seed on the campaign's seeds beside those on the fresh ones."""
    retest = campaign.retest
    assert retest is not None
    source, individual = retest_source(campaign)
    fig = Figure(figsize=(11, 4), layout="constrained")
    curves_ax, returns_ax = fig.subplots(1, 2)
    _curves_panel(
        curves_ax,
        retest.results["curve_steps"],
        retest.results["curve_returns"][0],
        retest.population.train_seeds[0],
    )
    curves_ax.set_title("re-test: learning curves on fresh seeds")
    groups = [("fresh seeds (re-test)", retest.results["returns"][0])]
    if source is not None:
        groups.insert(0, ("campaign seeds", source.results["returns"][individual]))
    for x, (_, returns) in enumerate(groups):
        finite = returns[np.isfinite(returns)]  # a failed seed has no return
        returns_ax.scatter(np.full(len(finite), x), finite, s=40, zorder=3)
        if finite.size:
            returns_ax.hlines(finite.mean(), x - 0.25, x + 0.25, color="black")
    returns_ax.set_xticks(range(len(groups)), [name for name, _ in groups])
    returns_ax.set_xlim(-0.6, len(groups) - 0.4)
    returns_ax.set_ylabel("evaluation return per seed (bar: mean)")
    returns_ax.set_title("evaluation return: campaign vs fresh seeds")
    returns_ax.grid(alpha=0.3)
    return fig


# -- HTML ----------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
img { max-width: 100%; }
figure { margin: 1em 0; }
figcaption { color: #555; font-size: 0.9em; }
nav li { display: inline; margin-right: 1em; }
"""


def _escape(value: Any) -> str:
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(fig: Figure, caption: str) -> str:
    return (
        f'<figure><img src="{png_data_uri(fig)}" alt="{_escape(caption)}">'
        f"<figcaption>{_escape(caption)}</figcaption></figure>"
    )


def _pre(text: str) -> str:
    return f"<pre>{_escape(text)}</pre>"


def headline(best: dict[str, Any]) -> str:
    """What the campaign found, held-out test first: the answer trained again on fresh seeds
    that nothing selected on, then what the search saw of it."""
    if best["individual"] is None:
        return f"<p><strong>{_escape(best['note'])}</strong></p>"
    objectives = best["objectives"]
    primary = next(iter(objectives))
    seen = (
        f"in the search it scored {primary} {objectives[primary]:.4g} over the "
        f"{best['evidence_seeds']} seeds it was trained on"
    )
    answer = f"{best['generation']}, individual {best['individual']}"
    retest = best.get("retest")
    if retest is None:
        return (
            f"<p><strong>Best configuration</strong> ({_escape(answer)}): {_escape(seen)}; "
            "no held-out test yet.</p>"
        )
    return (
        f"<p><strong>Held-out test: mean return {retest['mean_return']:.4g}</strong> on "
        f"{len(retest['returns_per_seed'])} fresh seeds ({_escape(retest['status'])}) for the "
        f"configuration the search returns ({_escape(answer)}); {_escape(seen)}.</p>"
    )


def summary_section(campaign: Campaign) -> str:
    config = campaign.config
    training, budget = config["training"], config["budget"]
    done = len(campaign.generations)
    progress = f"{done} of {budget['generations']} finished"
    if done < budget["generations"]:
        progress += " (the campaign is still running or was stopped)"
    rows = [
        ("campaign", config["campaign"]),
        ("folder", campaign.folder),
        ("environment", config["env"]["id"]),
        ("algorithm", config["algorithm"]),
    ]
    strategy = config.get("search", {}).get("strategy")
    if strategy is not None:
        rows.append(("search strategy", strategy))
    rows += [
        ("objectives", ", ".join(f"{o['name']} ({o['direction']})" for o in campaign.objectives)),
        ("generations", progress),
        (
            "budget",
            f"{budget['population']} individuals x {training['seeds']} seeds x "
            f"{training['steps']} environment steps per generation, "
            f"{training['eval_episodes']} evaluation episodes per seed",
        ),
        (
            "environment steps trained so far",
            f"{sum(int(gen.results['env_steps'].sum()) for gen in campaign.generations):,}",
        ),
        ("held-out test", f"{config['retest']['seeds']} fresh seeds"),
    ]
    search = config.get("search", {})
    if "racing" in search:
        rows.insert(
            5,
            (
                "how configurations are judged",
                f"evidence {search['evidence']}, racing {json.dumps(search['racing'])}, "
                f"fidelity {json.dumps(search.get('fidelity', {'rungs': 1}))}",
            ),
        )
    return (
        headline(campaign.best)
        + _table(["", ""], rows)
        + "<h3>Per generation (<code>hpsrl status</code>)</h3>"
        + _pre(status_table(campaign.folder, campaign.generations))
        + "<h3>Best individual (<code>hpsrl best</code>)</h3>"
        + _pre(best_yaml(campaign.folder, campaign.best))
    )


def objectives_section(campaign: Campaign) -> str:
    return _figure(
        objectives_figure(campaign),
        "Objectives of the valid individuals per generation: boxes show the spread, lines the "
        "best and the median; failed individuals (no objective) are counted under each generation.",
    )


def _interactive(fig: go.Figure, key: str, caption: str) -> str:
    return (
        f"<figure>{figure_html(fig, f'figure-{key}')}"
        f"<figcaption>{_escape(caption)}</figcaption></figure>"
    )


def _answer_note(campaign: Campaign) -> str:
    rows = campaign.individuals
    if rows.answer is None:
        return "every individual failed, so no answer is marked"
    note = (
        f"the red star is the configuration hpsrl best returns "
        f"({campaign.batches[rows.generation[rows.answer]]}, individual "
        f"{rows.index[rows.answer]})"
    )
    if pools_evidence(campaign.config):
        note += (
            ", chosen by its estimate over every seed its configuration was trained on (in its "
            "hover), not by the value over its own seeds plotted here"
        )
    return note


def _nothing_to_plot(campaign: Campaign) -> str:
    primary = campaign.objectives[0]["name"]
    return f"<p>No individual has a finite {_escape(primary)} yet.</p>"


def pareto_section(campaign: Campaign) -> str:
    first, second = campaign.objectives[:2]
    fig = interactive.pareto_figure(campaign.config, campaign.individuals, campaign.batches)
    if fig is None:
        return _nothing_to_plot(campaign)
    return _interactive(
        fig,
        "pareto",
        f"Every valid individual of every generation on {first['name']} and {second['name']} "
        "(over its own seeds), a colour per generation; ringed and joined: those no other "
        f"individual beats on both; {_answer_note(campaign)}. Hover for an individual's genes "
        "and scores; click a generation in the legend to hide it.",
    )


#: The most individuals the importance figure reads, from the latest generations back.
IMPORTANCE_INDIVIDUALS = 2000


def _importance_span(gens: Sequence[Generation], campaign: Campaign) -> str:
    """Which generations the importance covers, where it is not all of them."""
    if len(gens) == len(campaign.generations):
        return ""
    return f" in {gens[0].population.batch}-{gens[-1].population.batch} (the latest)"


def importance_section(campaign: Campaign) -> str:
    # The latest generations, up to IMPORTANCE_INDIVIDUALS individuals: Optuna builds its study
    # of them one trial at a time, seconds per thousand.
    gens, size = [], 0
    for gen in reversed(campaign.generations):
        if gens and size + len(gen.population) > IMPORTANCE_INDIVIDUALS:
            break
        gens.insert(0, gen)
        size += len(gen.population)
    _, trials = campaign_trials(campaign.folder, gens, details=False)
    fig, missing = interactive.importance_figure(campaign.config, trials)
    why = "".join(f"<li>{_escape(line)}</li>" for line in missing)
    if fig is None:
        return f"<p>No importance yet:</p><ul>{why}</ul>"
    caption = (
        "How much each hyperparameter decides whether an individual is among the best on each "
        "objective (the best 10%, or the best 5 where fewer than 50 trained individuals have a "
        "value): PED-ANOVA (Optuna's PedAnovaImportanceEvaluator) over every individual trained "
        f"in full{_importance_span(gens, campaign)}, failed ones left out. A list gene appears as "
        "its length (NAME.length) and its elements (NAME[i]). Sorted by the first objective; each "
        "objective's importances sum to 1."
    )
    figure = _interactive(fig, "importance", caption)
    return figure + (f"<p>Left out:</p><ul>{why}</ul>" if missing else "")


def parallel_section(campaign: Campaign) -> str:
    primary = campaign.objectives[0]["name"]
    fig = interactive.parallel_figure(campaign.config, campaign.individuals)
    if fig is None:
        return _nothing_to_plot(campaign)
    return _interactive(
        fig,
        "parallel",
        f"Every valid individual as one line through its genes and objectives, coloured by "
        f"{primary} (brighter is better); the red line is the configuration hpsrl best returns. "
        "Log genes are on log10 axes; 'none' marks a list element an individual does not have; "
        "an objective with infinite values (a threshold never reached) has no axis. Drag along "
        "an axis to keep only the lines that cross it there; drag an axis's title to reorder.",
    )


def slices_section(campaign: Campaign) -> str:
    primary = campaign.objectives[0]
    better = better_words(primary["direction"])
    failed = int((~campaign.individuals.ok).sum())
    fig = interactive.genes_figure(campaign.config, campaign.individuals, campaign.batches)
    if fig is None:
        return _nothing_to_plot(campaign)
    return _interactive(
        fig,
        "slices",
        f"{primary['name']} ({better}, over each individual's own seeds) against each "
        "gene, a colour per generation; a list gene has a panel for its length and one per "
        "element. Categories and short integer ranges are spread sideways so that equal values "
        f"stay visible; {_answer_note(campaign)}; {failed} failed individuals have no value and "
        "are left out. Hover for an individual's genes and scores.",
    )


def genes_section(campaign: Campaign) -> str:
    space = search_space(campaign.config)
    return "".join(
        _figure(gene_figure(campaign, gene), f"Gene {gene.name}: {json.dumps(gene.to_dict())}")
        for gene in space.genes
    )


def curves_section(campaign: Campaign) -> str:
    return _figure(
        curves_figure(campaign),
        "Learning curves of each generation's leader (the best estimate of the first objective; "
        f"the last {CURVE_GENERATIONS} generations), one line per training seed (its seed in "
        "brackets).",
    )


def retest_section(campaign: Campaign) -> str:
    retest = campaign.retest
    assert retest is not None
    source, individual = retest_source(campaign)
    if source is None:
        origin = "an individual that no finished generation holds any more"
    else:
        origin = f"individual {individual} of {source.population.batch}"
    rows = [
        (k, int(seed), f"{ret:.4g}")
        for k, (seed, ret) in enumerate(
            zip(retest.population.train_seeds[0], retest.results["returns"][0], strict=True)
        )
    ]
    status = retest.results["status"][0]
    return (
        f"<p>Re-test of {_escape(origin)} on {len(rows)} fresh seeds: {_escape(status)}.</p>"
        + _table(["seed", "training seed", "evaluation return"], rows)
        + _figure(retest_figure(campaign), "The best individual trained again on fresh seeds.")
    )


def failures_section(campaign: Campaign) -> str:
    batches = [*campaign.generations, *([campaign.retest] if campaign.retest else [])]
    rows = [
        (
            gen.population.batch,
            i,
            gen.population.operators[i],
            json.dumps(gen.population.individuals[i]),
            gen.results["error"][i],
        )
        for gen in batches
        for i in np.flatnonzero(~gen.ok)
    ]
    if not rows:
        return "<p>No individual failed.</p>"
    return f"<p>{len(rows)} failed individuals.</p>" + _table(
        ["batch", "individual", "made by", "genes", "error"], rows
    )


def build_report(campaign_dir: str | Path) -> str:
    """The HTML report of the campaign in ``campaign_dir`` (RESULTS_DIR/CAMPAIGN)."""
    campaign = Campaign.read(campaign_dir)
    sections = [("summary", "Summary", summary_section)]
    if campaign.retest is not None:
        sections.append(("retest", "Held-out test on fresh seeds", retest_section))
    sections.append(("objectives", "Objectives per generation", objectives_section))
    if len(campaign.objectives) > 1:
        sections.append(("pareto", "Pareto front", pareto_section))
    primary = campaign.objectives[0]["name"]
    sections += [
        ("importance", "Hyperparameter importance", importance_section),
        ("parallel", "Parallel coordinates", parallel_section),
        ("slices", f"Each gene against {primary}", slices_section),
        ("genes", "Gene distributions", genes_section),
        ("curves", "Learning curves of the best individuals", curves_section),
    ]
    sections += [
        ("failures", "Failures", failures_section),
        ("config", "Campaign config", lambda c: _pre(yaml.safe_dump(c.config, sort_keys=False))),
    ]
    title = f"hpsrl campaign {campaign.config['campaign']}"
    nav = "".join(f'<li><a href="#{key}">{_escape(name)}</a></li>' for key, name, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{_escape(name)}</h2>{render(campaign)}</section>'
        for key, name, render in sections
    )
    # plotly.js once for the whole page, before the figures that draw with it
    script = interactive.plotly_script() if "plotly-graph-div" in body else ""
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_escape(title)}</title><style>{STYLE}</style>{script}</head>"
        f"<body><h1>{_escape(title)}</h1><nav><ul>{nav}</ul></nav>{body}</body></html>\n"
    )


def write_report(campaign_dir: str | Path, out: str | Path) -> Path:
    """Write the report to ``out`` under a temporary name first, so a reader never sees half."""
    write_text_atomic(out, build_report(campaign_dir))
    return Path(out)
