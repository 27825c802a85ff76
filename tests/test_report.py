"""The campaign's HTML report: its sections and pictures, for finished, partial and failed
campaigns; and Snakemake's own report."""

from __future__ import annotations

import base64
import copy
import html
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from matplotlib import image

from hpsrl.campaign.config import load_config, search_space
from hpsrl.campaign.genes import ListGene
from hpsrl.campaign.model import Generation
from hpsrl.campaign.storage import write_generation
from hpsrl.readers.interactive import ANSWER_COLOUR, _score_colours
from hpsrl.readers.report import write_report
from hpsrl.search.evolve import initial_population
from hpsrl.search.generation import generation_record
from tests.conftest import TINY, copy_workflow
from tests.test_workflow import BIN, snakemake, write_config

# One gene-distribution plot per searched gene: TINY's own and its algorithm's default genes.
GENES = len(search_space(load_config(TINY)))

EVERY_SECTION = (
    "summary",
    "retest",  # the held-out test, what people quote first
    "objectives",
    "pareto",
    "importance",
    "parallel",
    "slices",
    "genes",
    "curves",
    "failures",
    "config",
)


def sections(text: str) -> list[str]:
    return re.findall(r'<section id="([a-z]+)">', text)


def figures(text: str) -> dict[str, tuple[list[dict], dict]]:
    """Every interactive figure: its id, its traces and its layout."""
    decoder = json.JSONDecoder()
    found = {}
    for match in re.finditer(r'Plotly\.newPlot\(\s*"([a-z-]+)",\s*', text):
        data, end = decoder.raw_decode(text, match.end())
        layout, _ = decoder.raw_decode(text, re.compile(r",\s*").match(text, end).end())
        found[match.group(1)] = (data, layout)
    return found


def answer_hovers(text: str) -> list[str]:
    """The hover text of the answer's mark in every figure that marks it."""
    return [
        trace["text"][0]
        for data, _ in figures(text).values()
        for trace in data
        if trace.get("name") == "chosen best (hpsrl best)"
    ]


def pictures(text: str) -> list[np.ndarray]:
    """Every embedded PNG, decoded."""
    encoded = re.findall(r'<img src="data:image/png;base64,([^"]+)"', text)
    return [image.imread(io.BytesIO(base64.b64decode(data)), format="png") for data in encoded]


def assert_pictures_show_something(text: str, expected: int) -> None:
    found = pictures(text)
    assert len(found) == expected
    for picture in found:
        assert picture.shape[0] > 100 and picture.shape[1] > 100
        assert picture[..., :3].std() > 0.05, "a blank picture"


def hpsrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "hpsrl"), *args], capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def campaign(tmp_path_factory) -> Path:
    """The tiny campaign, run to its end by snakemake (report included); its working folder."""
    workdir = copy_workflow(tmp_path_factory.mktemp("report"))
    write_config(workdir, copy.deepcopy(TINY))
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_workflow_writes_a_report_with_every_section(campaign):
    text = (campaign / "results" / "tiny" / "report.html").read_text()
    assert sections(text) == list(EVERY_SECTION)
    # objectives, one per gene, learning curves, re-test; the Pareto front is interactive
    assert_pictures_show_something(text, 1 + GENES + 1 + 1)
    assert list(figures(text)) == [
        "figure-pareto",
        "figure-parallel",
        "figure-slices",
    ], "8 trained individuals are too few for importance"
    assert "importance needs at least 10" in text
    assert text.count("* plotly.js v") == 1, "plotly.js inlined once"
    best = yaml.safe_load(hpsrl("best", str(campaign / "results" / "tiny")).stdout)
    answer = f"<b>{best['generation']}, individual {best['individual']}</b>"
    hovers = answer_hovers(text)
    assert hovers and all(hover.startswith(answer) for hover in hovers)
    for shown in ("CartPole-v1", "best return (max)", "hidden_sizes", "No individual failed."):
        assert shown in text
    # the held-out test is the first number the report gives
    first = re.search(r"<p><strong>(.*?)</strong>", text).group(1)
    assert first.startswith("Held-out test: mean return ")
    assert "2 of 2 finished" in text


@pytest.mark.slow
def test_snakemake_report_holds_our_outputs(campaign):
    done = snakemake(campaign, "--report", "snakemake-report.html")
    assert done.returncode == 0, done.stderr[-3000:]
    text = (campaign / "snakemake-report.html").read_text()
    for output in ("report.html", "status.txt", "best.yaml"):
        assert output in text


@pytest.mark.slow
def test_report_of_a_campaign_with_only_its_first_generation(campaign, tmp_path):
    partial = tmp_path / "tiny"
    partial.mkdir()
    shutil.copy(campaign / "results" / "tiny" / "gen000.h5", partial)
    out = tmp_path / "partial.html"
    done = hpsrl("report", str(partial), "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "retest" not in sections(text)
    assert "1 of 2 finished (the campaign is still running or was stopped)" in text
    assert_pictures_show_something(text, 1 + GENES + 1)


def fake_generation(
    config: dict, batch: str, failed: list[int], previous: Generation | None = None
) -> Generation:
    """A generation of ``config`` with made-up results; ``failed`` individuals failed;
    ``previous``: the record of the generation before (whose evidence it pools)."""
    population = initial_population(config)
    population.batch = batch
    n, seeds, points = len(population), config["training"]["seeds"], 4
    rng = np.random.default_rng(len(batch) + len(failed))
    returns = rng.uniform(10, 200, (n, seeds))
    curves = np.sort(rng.uniform(10, 200, (n, seeds, points)), axis=2)
    status = np.array(["ok"] * n, dtype=object)
    error = np.array([""] * n, dtype=object)
    for i in failed:
        returns[i], curves[i] = np.nan, np.nan
        status[i], error[i] = "failed", "seed 0: TrainingDiverged: PPO loss is nan at step 512"
    results = {
        "returns": returns,
        "episode_returns": returns[..., None].repeat(3, axis=2),
        "steps_to_threshold": np.full((n, seeds), np.inf),
        "env_steps": np.full((n, seeds), 1024),
        "train_seconds": np.ones((n, seeds)),
        "eval_seconds": np.ones((n, seeds)),
        "curve_returns": curves,
        "curve_steps": np.arange(1, points + 1) * 256,
        "status": status,
        "error": error,
    }
    return generation_record(population, results, previous)


def test_report_with_one_objective_and_failed_individuals(tmp_path):
    raw = copy.deepcopy(TINY)
    raw["objectives"] = [{"name": "return"}]
    raw["budget"]["generations"] = 3
    config = load_config(raw)
    folder = tmp_path / "tiny"
    first = fake_generation(config, "gen000", failed=[1])
    write_generation(folder / "gen000.h5", first)
    write_generation(
        folder / "gen001.h5", fake_generation(config, "gen001", failed=[0, 1, 2, 3], previous=first)
    )
    text = write_report(folder, tmp_path / "report.html").read_text()
    assert sections(text) == [
        "summary",
        "objectives",
        "importance",
        "parallel",
        "slices",
        "genes",
        "curves",
        "failures",
        "config",
    ]
    assert "5 failed individuals." in text
    assert "TrainingDiverged: PPO loss is nan at step 512" in text
    assert_pictures_show_something(text, 1 + GENES + 1)


def test_report_of_a_folder_without_generations_says_so(tmp_path):
    done = hpsrl("report", str(tmp_path))
    assert done.returncode == 1
    assert "holds no finished generation" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def fake_campaign(
    folder: Path, raw: dict, generations: int, failed: dict[int, list[int]] | None = None
) -> Path:
    """``generations`` made-up generations of config ``raw`` in ``folder``; ``failed``: the
    individuals that failed, per generation. From the second generation on, individual 0 is a
    raced copy (operator elite), so that with pooled evidence the answer is one of those."""
    config = load_config(raw)
    previous = None
    for g in range(generations):
        gen = fake_generation(config, f"gen{g:03d}", (failed or {}).get(g, []), previous)
        if g:
            gen.population.operators[0] = "elite"
        write_generation(folder / f"gen{g:03d}.h5", gen)
        previous = gen
    return folder


def variant(name: str) -> tuple[dict, int, dict[int, list[int]]]:
    """A config, its number of generations and its failures, for each kind of campaign the
    report must draw."""
    raw = copy.deepcopy(TINY)
    raw["budget"].update(population=6, generations=3)
    generations, failed = 3, {1: [2]}
    if name == "one-generation":
        generations, failed = 1, {0: [2]}
    elif name == "one-objective":
        raw["objectives"] = [{"name": "return"}]
    elif name == "categorical-lists":
        raw["genes"]["activation"]["choices"] = ["tanh", "relu", "elu"]
        raw["genes"]["hidden_sizes"] = {
            "type": "list",
            "min_length": 1,
            "max_length": 3,
            "element": {"type": "categorical", "choices": [16, 32, 64]},
        }
    elif name == "fixed-length-list":
        raw["genes"]["hidden_sizes"]["min_length"] = 2
    elif name == "all-failed":
        failed = {g: list(range(6)) for g in range(generations)}
    elif name in ("random", "bo"):
        raw["search"] = {"strategy": name}
    elif name == "enough-for-importance":
        raw["budget"]["population"] = 12
    return raw, generations, failed


VARIANTS = (
    "one-generation",
    "one-objective",
    "categorical-lists",
    "fixed-length-list",
    "all-failed",
    "random",
    "bo",
    "enough-for-importance",
)


@pytest.mark.parametrize("name", VARIANTS)
def test_interactive_figures_of_every_kind_of_campaign(tmp_path, name):
    raw, generations, failed = variant(name)
    folder = fake_campaign(tmp_path / "tiny", raw, generations, failed)
    text = write_report(folder, tmp_path / "report.html").read_text()
    shown = figures(text)
    pareto = ["figure-pareto"] if len(raw["objectives"]) > 1 else []
    if name == "all-failed":
        assert not shown and "plotly.js" not in text
        assert text.count("No individual has a finite return yet.") == 2 + bool(pareto)
        assert not answer_hovers(text)
        return
    valid = generations * raw["budget"]["population"] - sum(map(len, failed.values()))
    importance = ["figure-importance"] if valid >= 10 else []
    assert list(shown) == [*pareto, *importance, "figure-parallel", "figure-slices"]
    assert text.count("* plotly.js v") == 1, "plotly.js inlined once, not per figure"
    assert "<script src=" not in text, "nothing loaded from elsewhere: the report works offline"

    # the configuration hpsrl best returns, marked in every figure of individuals
    best = yaml.safe_load(hpsrl("best", str(folder)).stdout)
    answer = f"<b>{best['generation']}, individual {best['individual']}</b>"
    hovers = answer_hovers(text)
    assert len(hovers) >= 1 + bool(pareto) and all(h.startswith(answer) for h in hovers)
    if generations > 1:  # pooled evidence: the answer is a raced copy of the final generation
        assert answer == f"<b>gen{generations - 1:03d}, individual 0</b>"

    # hover: an individual's genes and scores
    genes = search_space(load_config(raw)).genes
    points, _ = shown["figure-slices"]
    for hover in points[0]["text"]:
        assert all(f"{gene.name} = " in hover for gene in genes)
        assert all(f"{o['name']}: " in hover for o in raw["objectives"])
    # a panel per scalar gene, per variable list length and per list element
    titles = [a["text"] for a in shown["figure-slices"][1]["annotations"]]
    expected = []
    for gene in genes:
        if isinstance(gene, ListGene):
            if gene.min_length < gene.max_length:
                expected.append(f"{gene.name} length")
            expected += [f"{gene.name}[{k}]" for k in range(gene.max_length)]
        else:
            expected.append(gene.name)
    assert titles == expected
    parallel, _ = shown["figure-parallel"]
    assert [d["label"].removesuffix(" (log)") for d in parallel[0]["dimensions"]][
        : len(expected)
    ] == expected
    # the generations in distinct colours, one legend entry each
    legend = [t for t in points if t.get("showlegend") and t["name"].startswith("gen")]
    assert [t["name"] for t in legend] == [f"gen{g:03d}" for g in range(generations)]
    assert len({t["marker"]["color"] for t in legend}) == generations

    if importance:
        bars, _ = shown["figure-importance"]
        assert sum(bars[0]["x"]) == pytest.approx(1.0)
        assert {"learning_rate", "hidden_sizes[0]"} <= set(bars[0]["y"])
        if pareto:  # made-up steps to threshold are all the same
            assert len(bars) == 1
            assert f"steps_to_threshold: all {valid} individuals trained in full scored" in text
    else:
        assert f"{valid} individuals trained in full have a finite value; importance needs" in text


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_parallel_coordinates_shade_better_brighter_and_the_answer_red(direction):
    scores = np.array([1.0, 2.0, 3.0])
    shade, scale, ticks = _score_colours(scores, direction, answer=1)
    best, worst = (2, 0) if direction == "maximize" else (0, 2)
    assert shade[best] == pytest.approx(0.9) and shade[worst] == pytest.approx(0.0)
    assert shade[1] == 1.0 and scale[-1] == [1.0, ANSWER_COLOUR]
    assert scale[-2] == [0.93, ANSWER_COLOUR] and scale[-3][0] == pytest.approx(0.9)
    assert ticks["ticktext"][-1] == "chosen best"


# -- the report in a real browser ----------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# First thing in <head>, before plotly.js: collect uncaught errors, unhandled promise rejections
# and console.error calls.
CATCH_ERRORS = """<script>
window.hpsrlErrors = [];
window.addEventListener("error", (e) => hpsrlErrors.push("uncaught: " + e.message));
window.addEventListener("unhandledrejection", (e) => hpsrlErrors.push("rejection: " + e.reason));
const consoleError = console.error;
console.error = (...args) => {
  hpsrlErrors.push("console.error: " + args.join(" "));
  consoleError(...args);
};
</script>"""

# Last thing in <body>, once the page has loaded: per figure, whether Plotly drew it and what
# hovering over the answer's mark shows; written into the page for --dump-dom.
PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const figures = {};
  for (const gd of document.querySelectorAll(".plotly-graph-div")) {
    const k = gd.data.findIndex((t) => t.name === "chosen best (hpsrl best)");
    let hover = null;
    if (k >= 0) {
      const t = gd.data[k];
      Plotly.Fx.hover(gd, [{curveNumber: k, pointNumber: 0}], (t.xaxis || "x") + (t.yaxis || "y"));
      const box = gd.querySelector(".hoverlayer .hovertext");
      hover = box === null ? "" : box.textContent;
    }
    figures[gd.id] = {
      drawn: gd.classList.contains("js-plotly-plot") && gd.querySelector(".main-svg") !== null,
      traces: gd._fullData.length,
      canvases: gd.querySelectorAll("canvas").length,
      hover: hover,
    };
  }
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({errors: hpsrlErrors, figures: figures});
  document.body.appendChild(out);
}, 500));
</script>"""


def load_in_chromium(page: Path, profile: Path) -> tuple[dict, str]:
    """Open ``page`` in headless Chromium with no network; what the probe found, and Chromium's
    log."""
    done = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",  # as root (CI)
            "--disable-gpu",
            "--enable-unsafe-swiftshader",  # WebGL (parallel coordinates) on the CPU
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no host resolves
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=30000",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert found, f"the page never finished loading; Chromium said:\n{done.stderr[-3000:]}"
    return json.loads(html.unescape(found.group(1))), done.stderr


def test_report_in_a_browser_draws_every_figure_without_errors(tmp_path):
    """Headless Chromium (Debian's chromium; scripts/test.sh installs it in CI) loads the report
    offline: no console error, every figure drawn, hover shows the answer hpsrl best gives."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium in CI: scripts/test.sh should have installed it")
        pytest.skip("no chromium to load the report in (Debian: apt-get install chromium)")
    raw, generations, failed = variant("enough-for-importance")
    folder = fake_campaign(tmp_path / "tiny", raw, generations, failed)
    text = write_report(folder, tmp_path / "report.html").read_text()
    page = tmp_path / "probed.html"
    page.write_text(
        text.replace("<head>", "<head>" + CATCH_ERRORS, 1).replace("</body>", PROBE + "</body>")
    )

    probe, log = load_in_chromium(page, tmp_path / "profile")
    assert probe["errors"] == []
    assert "Uncaught" not in log, log[-3000:]
    expected = ["figure-pareto", "figure-importance", "figure-parallel", "figure-slices"]
    assert list(figures(text)) == expected
    assert list(probe["figures"]) == expected
    for name, figure in probe["figures"].items():
        assert figure["drawn"] and figure["traces"] > 0, name
    assert probe["figures"]["figure-parallel"]["canvases"] > 0, "WebGL lines drawn"
    best = yaml.safe_load(hpsrl("best", str(folder)).stdout)
    answer = f"{best['generation']}, individual {best['individual']}"
    for name in ("figure-pareto", "figure-slices"):
        hover = probe["figures"][name]["hover"]
        assert answer in hover and "learning_rate = " in hover and "return: " in hover, hover
