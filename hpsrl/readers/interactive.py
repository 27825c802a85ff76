"""The report's interactive figures (Plotly): what was searched, against what it scored.

Hyperparameter importance (Optuna's PED-ANOVA over every trained individual), parallel
coordinates coloured by the primary objective, each gene against the primary objective, and the
first two objectives against each other. Every point's hover shows the individual's genes and
scores; the configuration ``hpsrl best`` returns is marked in each figure. The figures are plain
HTML fragments: the page that holds them inlines plotly.js once (:func:`plotly_script`), so the
report stays one file that works offline.
"""

from __future__ import annotations

import html
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from matplotlib.ticker import LogLocator, MaxNLocator
from plotly.colors import qualitative, sample_colorscale
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from hpsrl.campaign.config import search_space
from hpsrl.campaign.genes import CategoricalGene, FloatGene, Gene, IntGene, ListGene
from hpsrl.search.moo import better_words, higher_is_better, loss_sign, pareto_front, to_losses

#: Fewest trained individuals with a finite objective for which its importance is computed.
#: PED-ANOVA compares the best ``target_quantile`` of them with all; below 10 that top group
#: holds too few individuals to say anything.
MIN_IMPORTANCE_TRIALS = 10
#: How many individuals PED-ANOVA's top group should hold (Optuna's docs: at least 5).
IMPORTANCE_TOP = 5
ANSWER_COLOUR = "#d62728"
ANSWER_NAME = "chosen best (hpsrl best)"
TEMPLATE = "plotly_white"
#: What the figures' mode bar offers: no link to Plotly's site, the picture as a PNG.
PLOT_CONFIG = {"displaylogo": False, "responsive": True}


@dataclass
class Individuals:
    """Every individual of a campaign's finished generations, one row each, in order."""

    generation: np.ndarray  # (N,) its generation's position among the finished ones
    index: np.ndarray  # (N,) its index in that generation
    genes: list[dict[str, Any]]
    objectives: np.ndarray  # (N, M) over its own seeds; NaN for a failed individual
    ok: np.ndarray  # (N,) bool
    hover: list[str]  # its genes and scores, as the figures' hover shows them
    answer: int | None  # the row of the configuration hpsrl best returns, None if none

    @classmethod
    def of(cls, generations: Sequence[Any], best: dict[str, Any]) -> Individuals:
        """The rows of ``generations`` (hpsrl.campaign.model.Generation records, in order);
        ``best``: hpsrl.readers.summary.best_summary of the campaign, whose answer is marked."""
        config = generations[-1].config
        names = [o["name"] for o in config["objectives"]]
        pooled = "estimate" in best
        rows: dict[str, list[Any]] = {k: [] for k in ("generation", "index", "genes", "hover")}
        answer = None
        for g, gen in enumerate(generations):
            pop = gen.population
            for i, genes in enumerate(pop.individuals):
                if pop.batch == best["generation"] and i == best["individual"]:
                    answer = len(rows["index"])
                rows["generation"].append(g)
                rows["index"].append(i)
                rows["genes"].append(genes)
                lines = [f"<b>{pop.batch}, individual {i}</b> ({html.escape(pop.operators[i])})"]
                if gen.ok[i]:
                    lines += [
                        f"{name}: {_number(v)}"
                        for name, v in zip(names, gen.objectives[i], strict=True)
                    ]
                    if pooled:
                        lines.append(
                            f"estimate {names[0]}: {_number(gen.estimate[i, 0])} "
                            f"({int(gen.evidence.seeds[i])} seeds)"
                        )
                else:
                    lines.append(f"failed: {html.escape(str(gen.results['error'][i])[:160])}")
                lines += [f"{name} = {_gene_text(value)}" for name, value in genes.items()]
                rows["hover"].append("<br>".join(lines))
        return cls(
            generation=np.array(rows["generation"], dtype=int),
            index=np.array(rows["index"], dtype=int),
            genes=rows["genes"],
            objectives=np.concatenate([gen.objectives for gen in generations]),
            ok=np.concatenate([gen.ok for gen in generations]),
            hover=rows["hover"],
            answer=answer,
        )


def _number(value: float) -> str:
    value = float(value)
    if math.isinf(value):
        return "never" if value > 0 else "-inf"  # inf: steps to a threshold never reached
    return f"{value:.5g}"


def _gene_text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_gene_text(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def generation_colours(count: int) -> list[str]:
    """One distinct colour per generation: a qualitative palette while it lasts, then evenly
    spaced along viridis (early dark, late bright)."""
    if count <= len(qualitative.Plotly):
        return list(qualitative.Plotly[:count])
    return sample_colorscale("Viridis", list(np.linspace(0, 1, count)), colortype="rgb")


def figure_html(fig: go.Figure, div_id: str) -> str:
    """The figure as a <div> and the script that draws it; plotly.js must already be loaded."""
    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config=PLOT_CONFIG,
    )


def plotly_script() -> str:
    """plotly.js, inlined: the one copy every figure of the page draws with."""
    return f'<script type="text/javascript">{get_plotlyjs()}</script>'


# -- hyperparameter importance --------------------------------------------------------------------


def importance_figure(
    config: dict[str, Any], trials: Sequence[Any]
) -> tuple[go.Figure | None, list[str]]:
    """PED-ANOVA importance of each Optuna parameter (hpsrl.search.bayesopt.individual_parameters)
    for each objective, over the complete trials (hpsrl.readers.optuna_export.campaign_trials) whose
    objective is finite; and, per objective left out, why."""
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    objectives = config["objectives"]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        study = optuna.create_study(directions=[o["direction"] for o in objectives])
    finally:
        optuna.logging.set_verbosity(verbosity)
    study.add_trials(complete)
    found: dict[str, dict[str, float]] = {}
    missing = []
    for j, objective in enumerate(objectives):
        values = {t.values[j] for t in complete if math.isfinite(t.values[j])}
        usable = sum(math.isfinite(t.values[j]) for t in complete)
        if usable < MIN_IMPORTANCE_TRIALS:
            missing.append(
                f"{objective['name']}: {usable} individuals trained in full have a finite "
                f"value; importance needs at least {MIN_IMPORTANCE_TRIALS}"
            )
            continue
        if len(values) == 1:
            missing.append(
                f"{objective['name']}: all {usable} individuals trained in full scored "
                f"{_number(values.pop())}, so no hyperparameter made a difference to it"
            )
            continue
        sign = loss_sign(objective["direction"])  # PED-ANOVA minimises
        evaluator = PedAnovaImportanceEvaluator(target_quantile=max(0.1, IMPORTANCE_TOP / usable))
        with warnings.catch_warnings():  # "computes importances ... to achieve low target"
            warnings.simplefilter("ignore")
            found[objective["name"]] = get_param_importances(
                study, evaluator=evaluator, target=lambda t, j=j, sign=sign: sign * t.values[j]
            )
    if not found:
        return None, missing
    first = next(iter(found.values()))
    params = sorted(first, key=first.get)  # the most important at the top
    fig = make_subplots(rows=1, cols=len(found), subplot_titles=list(found), shared_yaxes=True)
    for k, values in enumerate(found.values()):
        fig.add_trace(
            go.Bar(
                x=[values.get(p, 0.0) for p in params],
                y=params,
                orientation="h",
                marker_color=qualitative.Plotly[k % 10],
                hovertemplate="%{y}: %{x:.3f}<extra></extra>",
                showlegend=False,
            ),
            row=1,
            col=k + 1,
        )
        fig.update_xaxes(title_text="importance (sums to 1)", range=[0, 1], row=1, col=k + 1)
    fig.update_layout(
        template=TEMPLATE, height=max(260, 60 + 28 * len(params)), margin={"t": 40, "b": 40}
    )
    return fig, missing


# -- parallel coordinates -------------------------------------------------------------------------


def _ticks(low: float, high: float, log: bool, integer: bool) -> list[float]:
    locator = LogLocator() if log else MaxNLocator(6, integer=integer)
    return [t for t in locator.tick_values(low, high) if low <= t <= high] or [low, high]


def _numeric_dimension(
    label: str, values: Sequence[float | None], gene: FloatGene | IntGene
) -> dict[str, Any]:
    """A parallel-coordinates axis over the gene's bounds (log10 for a log gene); a value of
    None (a list element the individual does not have) sits below them, labelled "none"."""
    integer = isinstance(gene, IntGene)
    ticks = _ticks(gene.low, gene.high, gene.log, integer)
    tickvals = [math.log10(t) if gene.log else t for t in ticks]
    ticktext = [f"{t:g}" for t in ticks]
    low, high = (math.log10(gene.low), math.log10(gene.high)) if gene.log else (gene.low, gene.high)
    none = low - 0.12 * (high - low or 1.0)
    present = [v for v in values if v is not None]
    if len(present) < len(values):
        tickvals, ticktext = [none, *tickvals], ["none", *ticktext]
    else:
        none = low
    return {
        "label": label + (" (log)" if gene.log else ""),
        "values": [none if v is None else (math.log10(v) if gene.log else v) for v in values],
        "range": [none, high],
        "tickvals": tickvals,
        "ticktext": ticktext,
    }


def _categorical_dimension(label: str, values: Sequence[Any], choices: Sequence[Any]) -> dict:
    codes = {str(c): k for k, c in enumerate(choices)}
    none = [v is None for v in values]
    tickvals = list(range(len(choices)))
    ticktext = [str(c) for c in choices]
    if any(none):
        tickvals, ticktext = [-1, *tickvals], ["none", *ticktext]
    return {
        "label": label,
        "values": [-1 if v is None else codes[str(v)] for v in values],
        "range": [tickvals[0], max(tickvals[-1], tickvals[0] + 1)],
        "tickvals": tickvals,
        "ticktext": ticktext,
    }


def _gene_dimensions(gene: Gene, genes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One axis per scalar gene; a list gene: its length, then one per element position."""
    if isinstance(gene, ListGene):
        length = _length_gene(gene)
        dims = []
        if length is not None:
            lengths = [len(g[gene.name]) for g in genes]
            dims.append(_numeric_dimension(length.name, lengths, length))
        for k in range(gene.max_length):
            values = [g[gene.name][k] if k < len(g[gene.name]) else None for g in genes]
            dims.append(_element_dimension(f"{gene.name}[{k}]", values, gene.element))
        return dims
    return [_element_dimension(gene.name, [g[gene.name] for g in genes], gene)]


def _length_gene(gene: ListGene) -> IntGene | None:
    """A list gene's length as a gene of its own; None for a fixed length."""
    if gene.min_length == gene.max_length:
        return None
    return IntGene(f"{gene.name} length", gene.min_length, gene.max_length)


def _element_dimension(label: str, values: Sequence[Any], gene: Gene) -> dict[str, Any]:
    if isinstance(gene, CategoricalGene):
        return _categorical_dimension(label, values, gene.choices)
    assert isinstance(gene, (FloatGene, IntGene))
    return _numeric_dimension(label, values, gene)


def _score_colours(values: np.ndarray, direction: str, answer: int | None) -> tuple:
    """Colours for parallel coordinates: the objective on viridis, brighter for better, over
    [0, 0.9]; the answer at 1, in red. Returns the colour values, the colour scale and the
    colour bar's ticks."""
    maximize = higher_is_better(direction)
    low, high = float(values.min()), float(values.max())
    span = high - low or 1.0
    shade = 0.9 * (values - low) / span
    if not maximize:  # bright = better either way
        shade = 0.9 - shade
    colours = [[0.9 * x / 9, c] for x, c in enumerate(sample_colorscale("Viridis", 10))]
    scale = [*colours, [0.93, ANSWER_COLOUR], [1.0, ANSWER_COLOUR]]
    ticks = MaxNLocator(5).tick_values(low, high)
    ticks = [t for t in ticks if low <= t <= high]
    tickvals = [0.9 * (t - low) / span if maximize else 0.9 - 0.9 * (t - low) / span for t in ticks]
    ticktext = [f"{t:.4g}" for t in ticks]
    if answer is not None:
        shade[answer] = 1.0
        tickvals.append(0.965)
        ticktext.append("chosen best")
    return shade, scale, {"tickvals": tickvals, "ticktext": ticktext}


def parallel_figure(config: dict[str, Any], rows: Individuals) -> go.Figure | None:
    """Every valid individual with a finite primary objective: one line through its genes and
    its objectives, coloured by the primary objective; the answer in red, drawn last (on top)."""
    objectives = config["objectives"]
    keep = np.flatnonzero(rows.ok & np.isfinite(rows.objectives[:, 0]))
    if keep.size == 0:
        return None
    if rows.answer is not None and rows.answer in keep:  # the answer last, drawn over the rest
        keep = np.array([*keep[keep != rows.answer], rows.answer])
    genes = [rows.genes[r] for r in keep]
    dims = [d for gene in search_space(config).genes for d in _gene_dimensions(gene, genes)]
    for j, objective in enumerate(objectives):
        values = rows.objectives[keep, j]
        if np.isfinite(values).all():  # an axis cannot show "never reached"
            dims.append({"label": objective["name"], "values": values.tolist()})
    answer = len(keep) - 1 if rows.answer is not None and keep[-1] == rows.answer else None
    shade, scale, ticks = _score_colours(
        rows.objectives[keep, 0], objectives[0]["direction"], answer
    )
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": shade,
                "colorscale": scale,
                "cmin": 0.0,
                "cmax": 1.0,
                "showscale": True,
                "colorbar": {"title": {"text": objectives[0]["name"]}, **ticks},
            },
            dimensions=dims,
        )
    )
    fig.update_layout(template=TEMPLATE, height=480, margin={"l": 70, "r": 40, "t": 70, "b": 30})
    return fig


# -- each gene against the objective -------------------------------------------------------------


@dataclass
class _Panel:
    """One panel of genes_figure: a gene (or a list gene's length or element) on x."""

    title: str
    x: list[Any]  # per row; None where the row has no such value
    gene: Gene  # what x is: its kind, bounds, log scale, choices


def _panels(config: dict[str, Any], rows: Individuals) -> list[_Panel]:
    panels = []
    for gene in search_space(config).genes:
        values = [g[gene.name] for g in rows.genes]
        if isinstance(gene, ListGene):
            length = _length_gene(gene)
            if length is not None:
                panels.append(_Panel(length.name, [len(v) for v in values], length))
            for k in range(gene.max_length):
                x = [v[k] if k < len(v) else None for v in values]
                panels.append(_Panel(f"{gene.name}[{k}]", x, gene.element))
        else:
            panels.append(_Panel(gene.name, values, gene))
    return panels


def _x_positions(panel: _Panel, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Where each row's value goes on x (NaN: none), and the x axis: categories and short
    integer ranges are numbered and jittered so that equal values do not hide each other."""
    gene = panel.gene
    if isinstance(gene, CategoricalGene):
        codes = {str(c): k for k, c in enumerate(gene.choices)}
        x = np.array([np.nan if v is None else codes[str(v)] for v in panel.x], dtype=float)
        axis = {
            "tickvals": list(range(len(gene.choices))),
            "ticktext": [str(c) for c in gene.choices],
            "range": [-0.5, len(gene.choices) - 0.5],
        }
        return x + rng.uniform(-0.15, 0.15, len(x)), axis
    x = np.array([np.nan if v is None else v for v in panel.x], dtype=float)
    if isinstance(gene, IntGene) and gene.high - gene.low <= 10:
        axis = {"tickvals": list(range(int(gene.low), int(gene.high) + 1))}
        return x + rng.uniform(-0.15, 0.15, len(x)), axis
    if not gene.log:
        return x, {}
    axis = {"type": "log", "tickformat": ".0e"}
    if math.log10(gene.high / gene.low) >= 1:  # a label per decade: plotly's 2-9 ones overlap
        axis["dtick"] = 1
    return x, axis


def genes_figure(
    config: dict[str, Any], rows: Individuals, batches: Sequence[str]
) -> go.Figure | None:
    """A panel per gene (a list gene: its length and each element): the primary objective of
    every valid individual against the gene's value, coloured by generation, the answer starred;
    None if no individual has a finite primary objective."""
    objective = config["objectives"][0]
    y = rows.objectives[:, 0]
    valid = rows.ok & np.isfinite(y)
    if not valid.any():
        return None
    panels = _panels(config, rows)
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig = make_subplots(
        rows=nrows,
        cols=cols,
        subplot_titles=[p.title for p in panels],
        shared_yaxes=True,
        horizontal_spacing=0.04,
        vertical_spacing=0.25 / nrows,
    )
    colours = generation_colours(len(batches))
    rng = np.random.default_rng(0)  # jitter only: the same picture every time
    traces: list[dict[str, Any]] = []
    cells: list[tuple[int, int]] = []  # each trace's (row, col)
    for p, panel in enumerate(panels):
        row, col = p // cols + 1, p % cols + 1
        x, axis = _x_positions(panel, rng)
        for g, batch in enumerate(batches):
            pick = np.flatnonzero(valid & (rows.generation == g) & np.isfinite(x))
            traces.append(
                {
                    "type": "scatter",
                    "x": x[pick],
                    "y": y[pick],
                    "mode": "markers",
                    "marker": {"color": colours[g], "size": 7, "opacity": 0.8},
                    "name": batch,
                    "legendgroup": batch,
                    "showlegend": p == 0,
                    "text": [rows.hover[r] for r in pick],
                    "hovertemplate": "%{text}<extra></extra>",
                }
            )
            cells.append((row, col))
        if rows.answer is not None and valid[rows.answer] and np.isfinite(x[rows.answer]):
            traces.append(_answer_marker(x[rows.answer], y[rows.answer], rows, p == 0))
            cells.append((row, col))
        fig.update_xaxes(axis, row=row, col=col)
    _add_traces(fig, traces, cells)
    fig.update_yaxes(title_text=objective["name"], col=1)
    fig.update_layout(
        template=TEMPLATE,
        height=90 + 300 * nrows,
        legend={"title": {"text": "generation"}},
        margin={"t": 50, "b": 40},
    )
    return fig


def _add_traces(
    fig: go.Figure, traces: Sequence[dict[str, Any]], cells: Sequence[tuple[int, int]] = ()
) -> None:
    """Add ``traces`` (plain dicts, each with its "type") to ``fig`` in one call, each in its
    (row, col) of ``cells`` where given. Plotly checks a graph object when it is made and again
    when it is added, and repeats its bookkeeping per call: for a trace per generation and
    panel, that was most of the figure's time."""
    if cells:
        fig.add_traces(traces, rows=[r for r, _ in cells], cols=[c for _, c in cells])
    else:
        fig.add_traces(traces)


def _answer_marker(x: float, y: float, rows: Individuals, legend: bool) -> dict[str, Any]:
    assert rows.answer is not None
    return {
        "type": "scatter",
        "x": [x],
        "y": [y],
        "mode": "markers",
        "marker": {
            "symbol": "star",
            "size": 17,
            "color": ANSWER_COLOUR,
            "line": {"color": "black", "width": 1},
        },
        "name": ANSWER_NAME,
        "legendgroup": "answer",
        "showlegend": legend,
        "text": [rows.hover[rows.answer]],
        "hovertemplate": "%{text}<extra>chosen best</extra>",
    }


# -- two objectives -------------------------------------------------------------------------------


def pareto_figure(
    config: dict[str, Any], rows: Individuals, batches: Sequence[str]
) -> go.Figure | None:
    """The first two objectives of every valid individual, a colour per generation; the
    individuals no other one dominates (over all generations) ringed and joined; the answer
    starred. None if no individual has both finite."""
    first, second = config["objectives"][:2]
    points = rows.objectives[:, :2]
    valid = rows.ok & np.isfinite(points).all(axis=1)
    if not valid.any():
        return None
    fig = go.Figure()
    colours = generation_colours(len(batches))
    traces = []
    for g, batch in enumerate(batches):
        pick = np.flatnonzero(valid & (rows.generation == g))
        traces.append(
            {
                "type": "scatter",
                "x": points[pick, 0],
                "y": points[pick, 1],
                "mode": "markers",
                "marker": {"color": colours[g], "size": 8, "opacity": 0.85},
                "name": batch,
                "text": [rows.hover[r] for r in pick],
                "hovertemplate": "%{text}<extra></extra>",
            }
        )
    on = np.flatnonzero(valid)
    losses = to_losses(points[on], [first["direction"], second["direction"]])
    front = on[pareto_front(losses)]
    front = front[np.argsort(points[front, 0])]
    traces.append(
        {
            "type": "scatter",
            "x": points[front, 0],
            "y": points[front, 1],
            "mode": "lines+markers",
            "line": {"color": "black", "width": 1},
            "marker": {
                "size": 14,
                "color": "rgba(0,0,0,0)",
                "line": {"color": "black", "width": 1.5},
            },
            "name": f"non-dominated ({len(front)})",
            "hoverinfo": "skip",
        }
    )
    if rows.answer is not None and valid[rows.answer]:
        traces.append(_answer_marker(*points[rows.answer], rows, True))
    _add_traces(fig, traces)
    fig.update_layout(
        template=TEMPLATE,
        height=520,
        xaxis_title=f"{first['name']} ({better_words(first['direction'])})",
        yaxis_title=f"{second['name']} ({better_words(second['direction'])})",
        legend={"title": {"text": "generation"}},
        margin={"t": 30},
    )
    return fig
