"""Long campaigns survive kills, damaged files, bad input and concurrent runs."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpsrl.campaign.config import load_config
from hpsrl.campaign.storage import StorageError, read_population, write_population
from hpsrl.search.evolve import initial_population
from tests.conftest import TINY, copy_workflow
from tests.test_workflow import BIN, snakemake, write_config

# -- bad input: one readable message naming the key, before any job ----------------------------


def _drop_threshold(c):
    c["objectives"][1].pop("threshold")


BAD_CONFIGS = {
    "unknown env id": (lambda c: c["env"].update(id="CartPol-v1"), ["env", "CartPole-v1"]),
    "unknown algorithm": (lambda c: c.update(algorithm="a3c"), ["algorithm", "ppo", "dqn"]),
    "continuous actions with dqn": (
        lambda c: (
            c.update(algorithm="dqn"),
            c["env"].update(id="Pendulum-v1"),
            c.update(fixed={}),
            c["genes"].pop("hidden_sizes"),
        ),
        ["algorithm", "continuous"],
    ),
    "gene low > high": (lambda c: c["genes"]["gamma"].update(low=0.99, high=0.9), ["gamma"]),
    "log scale with low <= 0": (
        lambda c: c["genes"]["learning_rate"].update(low=0.0),
        ["learning_rate", "log"],
    ),
    "empty categorical": (lambda c: c["genes"]["activation"].update(choices=[]), ["activation"]),
    "population < 2": (lambda c: c["budget"].update(population=1), ["budget.population"]),
    "racing leaves no room": (
        lambda c: c.update(search={"racing": {"share": 0.9}}),
        ["search.racing.share"],
    ),
    "seeds < 1": (lambda c: c["training"].update(seeds=0), ["training.seeds"]),
    "missing optional dependency": (
        lambda c: c["env"].update(
            id="NeedsBox2d-v0", entry_point="tests.fixtures_envs:NeedsMissingPackageEnv"
        ),
        ["env", "pip install"],
    ),
    "steps_to_threshold without threshold": (_drop_threshold, ["threshold"]),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_gets_one_readable_message(workdir, tiny_config, case):
    change, words = BAD_CONFIGS[case]
    change(tiny_config)
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-n", env_extra={"PYTHONPATH": str(Path(__file__).parents[1])})
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in output and 'File "' not in output, output
    message = [line for line in output.splitlines() if line.startswith("hpsrl: ")]
    assert message, output
    for word in words:
        assert word in output, (word, output)
    assert not (workdir / "results").exists()


def test_malformed_yaml_names_file_and_line(workdir):
    (workdir / "config" / "config.yaml").write_text("ga: {population: 4\nseed: 1\n")
    done = snakemake(workdir, "-n")
    assert done.returncode != 0
    message = [line for line in done.stderr.splitlines() if line.startswith("hpsrl: ")]
    assert message == [
        "hpsrl: config file config/config.yaml is not valid YAML: line 2, column 5: expected "
        "',' or '}', but got ':' (while parsing a flow mapping at line 1)"
    ], done.stderr
    assert "Traceback" not in done.stderr


def test_a_malformed_configfile_stops_before_any_job(workdir):
    # Snakemake parses a --configfile before the workflow runs, and its own message names neither
    # the file nor the line (Snakemake 9.27: "Config file is not valid JSON or YAML"); hpsrl check
    # does, as the README says.
    bad = workdir / "bad.yaml"
    bad.write_text("campaign: x\nga: {population: 4\nseed: 1\n")
    done = snakemake(workdir, "-n", "--configfile", "bad.yaml")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert not (workdir / "results").exists()
    checked = subprocess.run(
        [str(BIN / "hpsrl"), "check", "bad.yaml"], cwd=workdir, capture_output=True, text=True
    )
    assert checked.returncode == 1
    assert checked.stderr == (
        "hpsrl: error: config file bad.yaml is not valid YAML: line 3, column 5: expected ',' "
        "or '}', but got ':' (while parsing a flow mapping at line 2)\n"
    )


# -- writing results: never half a file, never a damaged earlier one ---------------------------


def test_killed_writer_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.h5"
    script = textwrap.dedent(f"""
        import sys, time
        import numpy as np
        from hpsrl.campaign.storage import atomic_h5
        with atomic_h5({str(target)!r}) as f:
            f["big"] = np.zeros(1_000_000)
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.kill()
    proc.wait()
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")], "only a hidden tmp"


def _writer(target: Path) -> subprocess.Popen:
    """A process that stays in the middle of writing ``target``: an HDF5 file with atomic_h5, a
    text file with write_text_atomic (between writing its temporary file and renaming it)."""
    if target.suffix == ".h5":
        write = f"""
            from hpsrl.campaign.storage import atomic_h5
            with atomic_h5({str(target)!r}) as f:
                f["x"] = [1.0]
                print("writing", flush=True)
                time.sleep(120)
        """
    else:
        write = f"""
            from hpsrl.campaign.storage import write_text_atomic
            os.replace = lambda *_: (print("writing", flush=True), time.sleep(120))
            write_text_atomic({str(target)!r}, "ind000.h5\\n")
        """
    script = "import os, time\n" + textwrap.dedent(write)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def test_a_killed_writers_temporary_file_goes_with_the_next_write_in_its_folder(tmp_path):
    # Nothing else would ever remove what a writer killed mid-write leaves; a live writer's stays.
    live = _writer(tmp_path / "a.h5")
    try:
        killed = [_writer(tmp_path / name) for name in ("b.h5", "ind000-003.txt")]
        for proc in killed:
            proc.kill()
            proc.wait()
        left = sorted(p.name for p in tmp_path.glob(".*.tmp"))
        assert [name.split(".")[1] for name in left] == ["a", "b", "ind000-003"], left

        write_population(tmp_path / "population.h5", initial_population(load_config(TINY)))
        assert [p.name for p in tmp_path.glob(".*.tmp")] == [left[0]], "the live writer's stays"
    finally:
        live.kill()
        live.wait()


def test_full_disk_is_a_clear_error_and_keeps_the_old_file(tiny_config, tmp_path):
    target = tmp_path / "population.h5"
    pop = initial_population(load_config(tiny_config))
    write_population(target, pop)
    before = target.read_bytes()
    # A file-size limit makes writes fail like a full disk (EFBIG instead of ENOSPC).
    script = textwrap.dedent(f"""
        import resource, signal
        import numpy as np
        from hpsrl.campaign.storage import StorageError, atomic_h5
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, 16_384))
        try:
            with atomic_h5({str(target)!r}) as f:
                f["big"] = np.random.default_rng(0).random(100_000)
        except StorageError as e:
            print(e)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert f"cannot write {target}" in done.stdout, done.stdout + done.stderr
    assert "finished results are untouched" in done.stdout
    assert target.read_bytes() == before
    assert read_population(target).individuals == pop.individuals
    assert sorted(p.name for p in tmp_path.iterdir()) == ["population.h5"]


def test_unwritable_results_dir_fails_before_any_job(workdir, tiny_config):
    (workdir / "blocked").write_text("a file where a folder should be")
    tiny_config["results_dir"] = "blocked/results"
    write_config(workdir, tiny_config)
    done = snakemake(workdir, "-n")
    assert done.returncode != 0
    assert "hpsrl: results cannot be written" in done.stderr
    assert "results_dir" in done.stderr


def test_write_under_a_file_is_a_storage_error(tiny_config, tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(StorageError, match="cannot write"):
        write_population(tmp_path / "f" / "p.h5", initial_population(load_config(tiny_config)))


# -- kill anywhere, rerun, same result -------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    """pid and every process below it (snakemake starts jobs in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def _kill_all(proc: subprocess.Popen) -> None:
    for pid in _descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _start_snakemake(workdir: Path) -> subprocess.Popen:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.Popen(
        [str(BIN / "snakemake"), "-j2"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the campaign ended before the kill point"
        assert time.monotonic() < deadline, "kill point not reached"
        time.sleep(0.005)


def _finished_results(results: Path) -> dict[Path, tuple[int, bytes]]:
    """Each result file's inode and bytes: a retrained result is a new file (written under a
    temporary name and renamed), a restored or untouched one keeps its inode."""
    return {p: (p.stat().st_ino, p.read_bytes()) for p in results.glob("gen*/ind*.h5")}


def _campaign_arrays(results: Path) -> dict[str, np.ndarray]:
    out = {}
    for gen_file in sorted(results.glob("gen*.h5")):
        with h5py.File(gen_file) as f:
            for gene in f["population/genes"]:
                out[f"{gen_file.name}/{gene}"] = f["population/genes"][gene][()]
            for name in ("returns", "episode_returns", "objectives"):
                out[f"{gen_file.name}/{name}"] = f["results"][name][()]
    return out


def _in_campaign(results: Path, pattern: str):
    return lambda: any(results.glob(pattern))


KILL_POINTS = {
    # the first individual finished while the others still train
    "during training": "gen000/ind*.h5",
    # generation 0 collected: generation 1 is being evolved or about to be
    "during evolve": "gen000.h5",
    # some HDF5 file is half written under its temporary name
    "while writing HDF5": "**/.*.tmp",
    # the first individual of a job that trains the whole generation finished
    "half way through a job of 4 individuals": "gen000/ind*.h5",
}
# Individuals per training job at each kill point (1 unless named).
JOB_SIZES = {"half way through a job of 4 individuals": 4}


@pytest.fixture(scope="module")
def reference_campaign(tmp_path_factory) -> dict[str, np.ndarray]:
    """The tiny campaign (without re-test) run once, uninterrupted."""
    workdir = copy_workflow(tmp_path_factory.mktemp("reference"))
    config = copy.deepcopy(TINY)
    config["retest"]["seeds"] = 0
    write_config(workdir, config)
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    return _campaign_arrays(workdir / "results" / "tiny")


@pytest.mark.slow
@pytest.mark.parametrize("kill_point", list(KILL_POINTS))
def test_kill_anywhere_then_rerun_gives_the_same_campaign(
    workdir, tiny_config, reference_campaign, kill_point
):
    tiny_config["retest"]["seeds"] = 0
    tiny_config["training"]["individuals_per_job"] = JOB_SIZES.get(kill_point, 1)
    write_config(workdir, tiny_config)
    results = workdir / "results" / "tiny"
    proc = _start_snakemake(workdir)
    _wait_for(_in_campaign(results, KILL_POINTS[kill_point]), proc)
    _kill_all(proc)
    finished = _finished_results(results)

    # What the README says to do after a hard kill: the same command again (it removes the
    # killed run's locks itself).
    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hpsrl: removed the locks of snakemake run" in done.stderr

    for path, identity in finished.items():
        assert _finished_results(results)[path] == identity, f"{path} was trained again"
    arrays = _campaign_arrays(results)
    assert arrays.keys() == reference_campaign.keys()
    for key, expected in reference_campaign.items():
        np.testing.assert_array_equal(arrays[key], expected, err_msg=key)


@pytest.mark.slow
def test_damaged_or_lost_result_is_retrained_alone(workdir, tiny_config, reference_campaign):
    tiny_config["retest"]["seeds"] = 0
    tiny_config["training"]["individuals_per_job"] = 2
    write_config(workdir, tiny_config)
    results = workdir / "results" / "tiny"
    done = snakemake(workdir, "-j2", "--until", "train_individuals")
    assert done.returncode == 0, done.stderr[-3000:]
    damaged, lost = results / "gen000" / "ind001.h5", results / "gen000" / "ind003.h5"
    untouched = {p: p.stat().st_mtime_ns for p in (results / "gen000").glob("ind00[02].h5")}
    damaged.write_bytes(damaged.read_bytes()[:500])  # truncated, as by a crashed copy
    lost.unlink()

    log = results / "logs" / "gen000" / "collect.log"
    assert snakemake(workdir, "-j2").returncode != 0  # missing files are looked for first
    assert "results/tiny/gen000/ind003.h5 is missing" in log.read_text()
    assert "rerun snakemake to train it again" in log.read_text()
    assert snakemake(workdir, "-j2").returncode != 0
    assert (
        "results/tiny/gen000/ind001.h5 cannot be read (Unable to synchronously open file "
        "(truncated file: " in log.read_text()
    )
    assert "; moved it aside to results/tiny/gen000/ind001.h5.corrupt;" in log.read_text()
    assert "rerun snakemake to regenerate it" in log.read_text()
    assert (results / "gen000" / "ind001.h5.corrupt").exists()

    done = snakemake(workdir, "-j2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    arrays = _campaign_arrays(results)
    for key, expected in reference_campaign.items():
        np.testing.assert_array_equal(arrays[key], expected, err_msg=key)


@pytest.mark.slow
def test_second_snakemake_on_the_same_campaign_is_refused(workdir, tiny_config):
    tiny_config["training"]["steps"] = 20_000
    write_config(workdir, tiny_config)
    first = _start_snakemake(workdir)
    try:
        _wait_for(lambda: any((workdir / ".snakemake" / "locks").glob("*")), first)
        second = snakemake(workdir, "-j2")
        assert second.returncode != 0
        assert "cannot be locked" in second.stdout + second.stderr
        assert first.poll() is None, "the first run goes on"
    finally:
        _kill_all(first)


def test_a_device_given_as_a_result_is_never_moved_aside(tmp_path):
    """A workflow step moves a damaged result aside so that a rerun regenerates it, but only a
    regular file: /dev/null given as a generation record must stay where it is."""
    from hpsrl.cli import main

    assert main(["evolve", "--out", str(tmp_path / "p.h5"), "/dev/null"]) == 1
    assert Path("/dev/null").is_char_device()
    assert not Path("/dev/null.corrupt").exists()


# -- reading while a campaign writes ------------------------------------------------------------

# A reader that runs hpsrl commands (given as JSON, each without the campaign folder) on a
# campaign folder in a loop until a file appears, each in this process (many reads a second), and
# logs each as a JSON line: the command, its exit status, its stderr, its stdout's end, how long
# it took and which generation records existed when it started.
READER = textwrap.dedent("""
    import contextlib, io, json, logging, sys, time, traceback
    from pathlib import Path
    from hpsrl.cli import main

    logging.disable(logging.CRITICAL)
    campaign, stop, log = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    commands = json.loads(sys.argv[4])
    with log.open("w") as out:
        while not stop.exists():
            for command in commands:
                argv = [command[0], str(campaign), *command[1:]]
                finished = sorted(p.name for p in campaign.glob("gen*.h5"))
                stdout, stderr = io.StringIO(), io.StringIO()
                started = time.monotonic()
                with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                    try:
                        status = main(argv)
                    except SystemExit as e:
                        status = e.code
                    except BaseException:
                        status = "traceback"
                        traceback.print_exc()
                out.write(json.dumps({
                    "argv": argv, "status": status, "stderr": stderr.getvalue(),
                    "stdout": stdout.getvalue()[-400:], "seconds": time.monotonic() - started,
                    "finished": finished,
                }) + "\\n")
                out.flush()
""")

# What a read may say before the campaign has anything to show (exit status 1).
NOT_YET = ("is not a campaign folder", "holds no finished generation (gen000.h5, ...) yet")


@pytest.mark.slow
@pytest.mark.parametrize("locking", ["default", "FALSE"])
def test_reading_a_running_campaign_never_fails_nor_changes_it(
    workdir, tiny_config, reference_campaign, locking
):
    """hpsrl status, best, table and report, read in a loop from before the campaign starts
    until it ends, each read either shows the campaign so far or says it has nothing to show yet,
    and the campaign ends as one nobody read; with HDF5's file locking on (the default) and off
    (HDF5_USE_FILE_LOCKING=FALSE, as on NFS mounts without locks), for reader and writers."""
    tiny_config["retest"]["seeds"] = 0
    write_config(workdir, tiny_config)
    env = {} if locking == "default" else {"HDF5_USE_FILE_LOCKING": locking}
    results, stop, log = workdir / "results" / "tiny", workdir / "stop", workdir / "reads.jsonl"
    # The quick reads in one reader, the HTML report (seconds each) in another, so that the
    # quick ones still come many a second.
    commands = {
        log: [["status"], ["status", "--json"], ["best"], ["table"]],
        log.with_suffix(".report.jsonl"): [["report", "--out", str(workdir / "report.html")]],
    }
    readers = [
        subprocess.Popen(
            [sys.executable, "-c", READER, str(results), str(stop), str(path), json.dumps(argvs)],
            env={**os.environ, **env},
        )
        for path, argvs in commands.items()
    ]
    try:
        for path, reader in zip(commands, readers, strict=True):
            _wait_for(lambda p=path: p.exists() and p.stat().st_size > 0, reader, timeout=120)
        done = snakemake(workdir, "-j2", env_extra=env)
    finally:
        stop.touch()
        for reader in readers:
            reader.wait(timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [reader.returncode for reader in readers] == [0, 0]

    reads = [json.loads(line) for path in commands for line in path.read_text().splitlines()]
    for read in reads:
        if read["status"] != 0:
            assert read["status"] == 1, read
            assert read["stderr"].count("\n") == 1, read
            assert any(words in read["stderr"] for words in NOT_YET), read
            assert read["finished"] == [], "a finished generation is always shown"
    # Reads that found the campaign half done: a generation record there, not the last one.
    during = [r for r in reads if r["status"] == 0 and r["finished"] == ["gen000.h5"]]
    shows_gen001 = ("in progress: gen001", '"batch": "gen001"')  # (as text, as JSON)
    assert any(words in r["stdout"] for r in during for words in shows_gen001), len(reads)
    shown = {r["argv"][0] for r in reads if r["status"] == 0 and r["finished"]}
    assert shown == {"status", "best", "table", "report"}, len(reads)
    assert max(r["seconds"] for r in reads) < 30, "a read never waits for a writer"

    arrays = _campaign_arrays(results)
    assert arrays.keys() == reference_campaign.keys()
    for key, expected in reference_campaign.items():
        np.testing.assert_array_equal(arrays[key], expected, err_msg=key)


@pytest.mark.parametrize("locking", ["default", "FALSE"])
def test_a_file_held_open_by_a_reader_is_replaced_without_waiting(tiny_config, tmp_path, locking):
    """A reader that has a file open (with locking on, HDF5 holds a shared lock on it) does not
    stop a writer from replacing it: the writer writes a new file and renames it over the old
    one. The reader goes on reading the file it opened, whole; its next open reads the new."""
    target = tmp_path / "population.h5"
    write_population(target, initial_population(load_config(tiny_config)))
    env = {**os.environ, **({} if locking == "default" else {"HDF5_USE_FILE_LOCKING": locking})}
    read = textwrap.dedent(f"""
        from hpsrl.campaign.storage import open_h5, read_population
        with open_h5({str(target)!r}) as f:
            print("open", flush=True)
            input()
            print(f.attrs["config"].count('"seed": 7'), flush=True)
        print(read_population({str(target)!r}).config["seed"], flush=True)
    """)
    tiny_config["seed"] = 8
    write = textwrap.dedent(f"""
        from hpsrl.campaign.config import load_config
        from hpsrl.search.evolve import initial_population
        from hpsrl.campaign.storage import write_population
        write_population({str(target)!r}, initial_population(load_config({tiny_config!r})))
    """)
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    reader = subprocess.Popen([sys.executable, "-c", read], env=env, **pipes)
    try:
        assert reader.stdout.readline() == "open\n"
        writer = subprocess.run(
            [sys.executable, "-c", write], env=env, capture_output=True, text=True, timeout=120
        )
        assert writer.returncode == 0, writer.stderr
        reader.stdin.write("go on\n")
        reader.stdin.flush()
        assert reader.stdout.readline() == "1\n", "the open file is the old one, whole"
        assert reader.stdout.readline() == "8\n", "the next open reads the new one"
    finally:
        reader.kill()
        reader.wait()


def test_readers_open_files_read_only_and_close_them(tmp_path, monkeypatch):
    """Every HDF5 file that status, best, table, report, export, evaluate and compare open is
    opened read-only and closed by the time the command returns, and no file of the campaign
    changes."""
    from tests.test_fuzz import run_main, write_made_up_campaign

    write_made_up_campaign(tmp_path / "made-up")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.h5")}
    monkeypatch.chdir(tmp_path)
    opened: list[tuple[str, str, h5py.File]] = []
    real_file = h5py.File

    def recording_file(name, mode="r", *args, **kwargs):
        f = real_file(name, mode, *args, **kwargs)
        opened.append((str(name), mode, f))
        return f

    monkeypatch.setattr(h5py, "File", recording_file)
    for argv in (
        ["status", "made-up"],
        ["status", "made-up", "--json"],
        ["best", "made-up"],
        ["table", "made-up"],
        ["report", "made-up", "--out", "report.html"],
        ["export", "made-up", "--out", "export"],
        ["evaluate", "made-up"],  # made-up weights: it opens the file, then cannot rebuild
        ["compare", "made-up", "--plot", "c.png", "--summary", "c.yaml"],
    ):
        opened.clear()
        status, _, stderr = run_main(argv)
        assert status == 0 or "cannot rebuild its agent" in stderr, (argv, stderr)
        assert opened, argv
        assert {mode for _, mode, _ in opened} == {"r"}, (argv, opened)
        assert not [name for name, _, f in opened if f.id.valid], f"{argv} left files open"
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.h5")} == before
