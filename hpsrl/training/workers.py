"""Warm training workers: the processes that train a local snakemake run's seeds, started once per
run instead of once per training job.

A training job that launches its own ranks pays, before it trains anything, for starting them and
importing torch, gymnasium and hpsrl in each: about 2.3 s a job on 2 cores (measured), when a
20k-step CartPole seed trains in about 0.5 s. So when snakemake starts running jobs on this
machine (the onstart hook in workflow/rules/workers.smk) it starts one pool: a coordinator that
listens on a Unix socket, and one worker process per core that imports all that once. A training
job's command then only hands its individuals to the coordinator,

    python -m hpsrl.training.workers submit SOCKET -- mpiexec -n 2 python -m mpi4py -m hpsrl train

a process that imports nothing heavy, and waits. It reads the job's request from the command
after ``--`` (:func:`~hpsrl.training.train_request.read_train_command`) and sends the pool that
request as JSON, not the command. The coordinator queues the job's seeds, gives each to the next
free worker, hands each seed back to the job's :class:`~hpsrl.training.train.TrainingJob`, which
writes each individual's result file as soon as all its seeds are in, then the job's manifest, and
sends the job its log lines and exit status.

A job trains and writes what the command after ``--`` would: the same
:class:`~hpsrl.training.train.TrainingJob` and :func:`~hpsrl.training.train.train_seed`. A job that
comes while the pool is still starting (a resumed campaign's first jobs start with the run) waits
for it to listen, at most START_TIMEOUT_S. Where no pool answers (one that could not start or
stopped, a pool of a run in another folder), the job runs that command itself, and its log says why.
A job that is killed takes its seeds not yet started out of the queue. The pool exits with the
snakemake process that started it.

This module imports only the standard library at the top (and hpsrl's constants and
:mod:`hpsrl.training.train_request`, which import nothing else): ``submit`` runs once per job.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpsrl import LOG_FORMAT  # the package's __init__: nothing but constants
from hpsrl.training.train_request import TrainRequest, read_train_command

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from hpsrl.campaign.model import SeedResult
    from hpsrl.training.train import TrainingJob

log = logging.getLogger("hpsrl.training.workers")  # not __main__, its name when run as a module

# Environment variable that turns the pool off (HPSRL_WARM_WORKERS=0): each training job then
# launches its own ranks, as on a cluster.
ENABLED_VAR = "HPSRL_WARM_WORKERS"

# How long a training job waits for a pool that is starting (its process is alive but does not
# listen yet). It listens within a second of starting; its workers importing torch do not delay
# that (a job's seeds queue for them), so this only bounds a pool that hangs.
START_TIMEOUT_S = 30.0
# What a job held by the pool exits with, and says, when the pool stops before the job is done.
STOPPED_EXIT = 1
STOPPED_WHY = "the run stopped (its warm workers were told to stop); this job stops unfinished"


def enabled() -> bool:
    return os.environ.get(ENABLED_VAR, "1").strip().lower() not in ("0", "false", "no", "off")


def campaigns_to_train(workflow: Any, rule: str) -> list[str] | None:
    """The campaigns (wildcard ``campaign``) of the ``rule`` jobs this Snakemake run will run, in
    the order Snakemake lists them; ``None`` where that cannot be read.

    It reads ``workflow.dag.needrun_jobs()``, which is Snakemake's private API: a release may
    rename or change it. The onstart hook then cannot tell whether any training job will run and
    starts the pool anyway (a pool with nothing to train costs only its start), with a warning.
    """
    try:
        jobs = list(workflow.dag.needrun_jobs())
        campaigns = [job.wildcards.campaign for job in jobs if job.rule.name == rule]
    # whatever a changed private API does, the answer is the same: not known
    except Exception as err:
        log.warning(
            "cannot list the jobs this Snakemake run will run (workflow.dag.needrun_jobs(): "
            "%s: %s): warm workers start whether or not a %s job runs",
            type(err).__name__,
            err,
            rule,
        )
        return None
    return list(dict.fromkeys(campaigns))


def socket_path(snakemake_pid: int) -> Path:
    """Where the pool of the snakemake process ``snakemake_pid`` listens."""
    return Path(tempfile.gettempdir()) / f"hpsrl-{os.getuid()}" / f"workers-{snakemake_pid}.sock"


def _pid_path(socket_file: Path) -> Path:
    """The file that names the process of the pool that listens, or is about to listen, on
    ``socket_file``: written when the pool is started, before snakemake starts any job, so that a
    job that finds no socket yet knows whether one is coming."""
    return socket_file.with_suffix(".pid")


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie, killed but not reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    with contextlib.suppress(OSError, IndexError):  # no /proc (macOS): taken as running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _remove_dead_runs(folder: Path) -> None:
    """Remove the sockets and pid files in ``folder`` of runs whose snakemake process is gone: a
    pool killed with SIGKILL cannot remove its own, and nothing else would. A live run's stay."""
    for entry in folder.glob("workers-*"):
        pid = entry.name.removeprefix("workers-").split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):  # removed meanwhile by another run starting
                entry.unlink()


def _private_folder(folder: Path) -> None:
    """Make ``folder`` for this user alone, or raise PermissionError: whoever can connect to the
    socket in it can have the pool write files as this user."""
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{folder} must belong to this user alone (mode 700)")


# -- snakemake's side ----------------------------------------------------------------------------


def start_pool(workers: int, algorithms: list[str], log_path: Path) -> subprocess.Popen | None:
    """Start the pool of this (snakemake) process with ``workers`` workers that import
    ``algorithms`` ahead; its own messages go to ``log_path``. None where it cannot start (the
    jobs then launch their own ranks)."""
    path = socket_path(os.getpid())
    command = [sys.executable, "-m", "hpsrl.training.workers", "serve", "--socket", str(path),
               "--workers", str(workers), "--parent", str(os.getpid()),
               "--algorithms", *algorithms]  # fmt: skip
    try:
        _private_folder(path.parent)
        _remove_dead_runs(path.parent)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as out:
            pool = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C stops snakemake, which stops the pool
            )
        # Snakemake starts jobs only once this hook returns: the first ones find it, and wait.
        _pid_path(path).write_text(f"{pool.pid}\n")
    except OSError as e:
        print(f"hpsrl: no warm workers ({e}); each training job starts its own", file=sys.stderr)
        return None
    return pool


def stop_pool(pool: subprocess.Popen | None) -> None:
    """Tell the pool to stop, without waiting for it (nothing waits for it any more)."""
    if pool is not None:
        pool.terminate()


# -- a training job's side -----------------------------------------------------------------------


def submit(path: str, command: list[str]) -> int:
    """Have the pool at ``path`` train what ``command`` (an ``hpsrl train`` command line) would,
    relaying its log lines to stderr; returns its exit status. The pool gets the command's
    :class:`~hpsrl.training.train_request.TrainRequest`, not the command. Without a pool that
    answers, or for arguments that are no request (the command then gives its own usage error),
    replaces this process with ``command``."""
    if "train" not in command:
        print(f"hpsrl: error: not an `hpsrl train` command: {' '.join(command)}", file=sys.stderr)
        return 2
    train = read_train_command(command[command.index("train") + 1 :])
    if train is None:
        _run_alone(command)
    client, why = _connect(Path(path))
    if client is None:
        print(f"hpsrl: {why}; it trains on its own ranks", file=sys.stderr)
        _run_alone(command)
    request = {"cwd": os.getcwd(), "train": train.to_json()}
    why = "the warm workers stopped before this job was done"
    try:
        client.sendall(json.dumps(request).encode() + b"\n")
        for line in client.makefile("r", encoding="utf-8"):
            message = json.loads(line)
            if "alone" in message:  # the pool of a run in another folder
                why = f"the warm workers serve another folder (this job {message['alone']})"
                break
            if "log" in message:
                print(message["log"], file=sys.stderr, flush=True)
            if "exit" in message:
                return int(message["exit"])
    except OSError:
        pass
    print(f"hpsrl: {why}; it trains on its own ranks", file=sys.stderr)
    _run_alone(command)
    return 1  # not reached: _run_alone does not return


def _connect(path: Path) -> tuple[socket.socket | None, str]:
    """A connection to the pool at ``path``, once it listens if it is starting; else None and why
    there is none."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(str(path))
            return client, ""
        except OSError as e:
            client.close()
            error = e.strerror or e
        try:
            pool = int(_pid_path(path).read_text())
        except (OSError, ValueError):
            return None, f"no warm workers listen on {path} ({error})"
        if not _alive(pool):
            return None, f"the warm workers (pid {pool}) are gone"
        if time.monotonic() > deadline:
            return None, (
                f"the warm workers (pid {pool}) did not listen on {path} within "
                f"{START_TIMEOUT_S:.0f} s ({error})"
            )
        time.sleep(0.05)


def _run_alone(command: list[str]) -> None:
    sys.stderr.flush()
    os.execvp(command[0], command)


# -- the workers ---------------------------------------------------------------------------------


class _SendLog(logging.Handler):
    """Sends each log line of a worker to the coordinator, which relays it to the job's log."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        self.conn.send(("log", self.format(record)))


def _work(conn: Connection, algorithms: list[str]) -> None:
    """A worker: import once, then train the seeds the coordinator sends until it sends None."""
    import importlib

    from hpsrl.cluster.mpi import limit_threads
    from hpsrl.training.recovery import RUNTIME_ERROR, failure_message, quarantine_damaged_input
    from hpsrl.training.train import train_seed

    for name in algorithms:
        importlib.import_module(f"hpsrl.agents.{name}")
    limit_threads()
    handler = _SendLog(conn)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    conn.send(("ready",))
    while (task := conn.recv()) is not None:
        pop, individual, k, checkpoints = task
        try:
            conn.send(("seed", train_seed(pop, individual, k, checkpoints)))
        except Exception as e:  # train_seed records training failures; this is the job's
            message = failure_message(e, quarantine_damaged_input("train", e))
            conn.send(("error", RUNTIME_ERROR, message or traceback.format_exc()))
    os._exit(0)  # nothing to flush or clean up: skip tearing torch down


@dataclass(eq=False)
class _Job:
    """One training job's request: the socket to answer on, and its training (what it still
    trains, and writes each result file and the manifest:
    :class:`~hpsrl.training.train.TrainingJob`)."""

    client: socket.socket
    name: str
    training: TrainingJob | None = None  # once planned
    over: bool = False  # answered, failed or given up by its client
    started: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    ready: bool = False
    task: tuple[_Job, int, int] | None = None  # (job, individual, seed) it trains


class _Coordinator:
    def __init__(self, listener: socket.socket, workers: int, algorithms: list[str]) -> None:
        import multiprocessing

        self.listener, self.algorithms = listener, algorithms
        # spawn, not fork: a worker must not inherit the sockets of jobs (a client would then
        # not see the pool close) nor whatever state the coordinator has
        self.context = multiprocessing.get_context("spawn")
        self.workers = [self._start_worker() for _ in range(workers)]
        self.jobs: dict[socket.socket, _Job] = {}
        self.queue: collections.deque[tuple[_Job, int, int]] = collections.deque()
        self.deaths = 0

    def _start_worker(self) -> _Worker:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(target=_work, args=(theirs, self.algorithms), daemon=True)
        process.start()
        theirs.close()
        return _Worker(process, ours)

    def step(self, timeout: float) -> None:
        from multiprocessing.connection import wait

        by_conn = {w.conn: w for w in self.workers}
        by_sentinel = {w.process.sentinel: w for w in self.workers}
        for ready in wait([self.listener, *self.jobs, *by_conn, *by_sentinel], timeout):
            if ready is self.listener:
                self._accept()
            elif ready in self.jobs:
                self._client_spoke(self.jobs[ready])
            elif ready in by_conn and by_conn[ready] in self.workers:  # not replaced meanwhile
                self._from_worker(by_conn[ready])
            elif ready in by_sentinel and by_sentinel[ready] in self.workers:
                self._replace(by_sentinel[ready])
        self._dispatch()

    def close(self) -> None:
        # The pool stops when its run does (Ctrl-C, a failed job, snakemake gone): the jobs it
        # holds stop unfinished. A client that lost its pool without this word (a crash) trains
        # its job itself instead; one that did so here would train on after Ctrl-C.
        for job in list(self.jobs.values()):
            self._send(job, log=f"hpsrl: {STOPPED_WHY}", exit=STOPPED_EXIT)
            job.client.close()
        for worker in self.workers:
            if worker.task is None:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)
            else:  # in a seed that nobody will wait for
                worker.process.terminate()
        for worker in self.workers:
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()

    # -- jobs ----------------------------------------------------------------------------------

    def _accept(self) -> None:
        client, _ = self.listener.accept()
        client.settimeout(5)  # a client sends its request as soon as it connects
        try:
            request = json.loads(client.makefile("rb").readline())
            cwd, train = Path(request["cwd"]), TrainRequest.from_json(request["train"])
            client.settimeout(None)
        except (OSError, ValueError, KeyError, TypeError):  # not one of our clients
            client.close()
            return
        if cwd.resolve() != Path.cwd().resolve():
            # the job's paths, and those in the config (results_dir), are relative to its folder
            with contextlib.suppress(OSError):
                client.sendall(json.dumps({"alone": f"runs in {cwd}, not {Path.cwd()}"}).encode())
            client.close()
            return
        job = _Job(client, name=str(train.manifest or train.out_paths[0]))
        self.jobs[client] = job
        self._send(job, log=f"hpsrl: trained by the warm workers of pid {os.getpid()}")
        with self._logging_to(job):
            self._plan(job, train)

    def _plan(self, job: _Job, train: TrainRequest) -> None:
        from hpsrl.training.train import TrainingJob

        try:
            job.training = TrainingJob(train, ranks=len(self.workers))
        except Exception as e:
            self._fail(job, e)
            return
        seeds = job.training.seeds
        self.queue.extend((job, individual, k) for individual, k in seeds)
        log.info("%s: %d seeds queued", job.name, len(seeds))
        self._maybe_done(job)

    def _client_spoke(self, job: _Job) -> None:
        """A client only speaks to leave: it was killed (snakemake cancelled the job)."""
        with contextlib.suppress(OSError):
            if job.client.recv(1):
                return
        log.info("%s: its job ended before it was done; dropped what it had still queued", job.name)
        self._forget(job)

    def _seed_done(self, job: _Job, individual: int, k: int, seed: SeedResult) -> None:
        with self._logging_to(job):  # writing the individual's result file logs it
            try:
                job.training.record_seeds(individual, {k: seed})
            except Exception as e:
                self._fail(job, e)
                return
            self._maybe_done(job)

    def _maybe_done(self, job: _Job) -> None:
        if job.over or not job.training.all_written:
            return
        try:
            job.training.write_manifest()
        except Exception as e:
            self._fail(job, e)
            return
        self._finish(job, 0)

    def _fail(self, job: _Job, error: Exception) -> None:
        from hpsrl.training.recovery import RUNTIME_ERROR, failure_message, quarantine_damaged_input

        message = failure_message(error, quarantine_damaged_input("train", error))
        self._finish(job, RUNTIME_ERROR, message or _message(error))

    def _finish(self, job: _Job, status: int, message: str = "") -> None:
        if job.over:
            return
        # its time in the pool, for the pool's log (benchmarks/orchestration_overhead.py reads it)
        log.info(
            "%s: exit status %d after %.3f s", job.name, status, time.monotonic() - job.started
        )
        if message:
            self._send(job, log=message)
        self._send(job, exit=status)
        self._forget(job)

    def _forget(self, job: _Job) -> None:
        """End ``job``: answered, failed or given up by its client; its queued seeds go."""
        job.over = True
        self.jobs.pop(job.client, None)
        job.client.close()
        self.queue = collections.deque(t for t in self.queue if not t[0].over)

    def _send(self, job: _Job, **message: Any) -> None:
        if job.over:
            return
        try:
            job.client.sendall(json.dumps(message).encode() + b"\n")
        except OSError:  # its client is gone: so is the job
            self._forget(job)

    @contextlib.contextmanager
    def _logging_to(self, job: _Job):
        """Relay the log lines of what the coordinator does for ``job`` to the job's log."""
        handler = _Relay(self, job)
        logging.getLogger("hpsrl").addHandler(handler)
        try:
            yield
        finally:
            logging.getLogger("hpsrl").removeHandler(handler)

    # -- workers -------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        for worker in self.workers:
            if not (worker.ready and worker.task is None and self.queue):
                continue
            job, individual, k = worker.task = self.queue.popleft()
            training = job.training
            worker.conn.send((training.pop, individual, k, training.checkpoints(individual)))

    def _from_worker(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._replace(worker)
            return
        kind, *body = message
        if kind == "ready":
            worker.ready = True
            log.info("worker pid %s ready", worker.process.pid)
            return
        if kind == "log" and worker.task is None:
            log.info("worker pid %s: %s", worker.process.pid, body[0])
            return
        job, individual, k = worker.task
        if kind == "log":
            self._send(job, log=body[0])
            return
        worker.task = None
        if job.over:
            return  # its client gave up on it
        if kind == "seed":
            self._seed_done(job, individual, k, body[0])
        else:  # "error": what the job cannot go on from (train_seed records the rest)
            status, text = body
            self._finish(job, status, text)

    def _replace(self, worker: _Worker) -> None:
        """A worker died (killed, out of memory): fail its job, start another in its place."""
        worker.process.join(timeout=5)
        code = worker.process.exitcode
        if worker.task is not None:
            job, individual, k = worker.task
            batch = job.training.pop.batch
            self._finish(
                job,
                1,
                f"hpsrl: error: the warm worker training {batch} individual {individual} "
                f"seed {k} died (exit status {code}); rerun snakemake to train the job again",
            )
        log.warning("worker pid %s died (exit status %s)", worker.process.pid, code)
        self.deaths += 1
        if self.deaths > 3 * len(self.workers):
            raise RuntimeError(f"{self.deaths} workers died: stopping the pool")
        self.workers[self.workers.index(worker)] = self._start_worker()


def _message(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)).rstrip()


class _Relay(logging.Handler):
    def __init__(self, coordinator: _Coordinator, job: _Job) -> None:
        super().__init__()
        self.coordinator, self.job = coordinator, job
        self.setFormatter(logging.Formatter(LOG_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        self.coordinator._send(self.job, log=self.format(record))


def serve(path: Path, workers: int, parent: int, algorithms: list[str]) -> None:
    """Run the pool until the process ``parent`` (snakemake) ends or it is sent SIGTERM."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    # Listen first: jobs wait for this, and their requests wait in the backlog meanwhile.
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path.unlink(missing_ok=True)
    listener.bind(str(path))
    listener.listen(128)
    coordinator = None
    try:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
        log.info("%d warm workers for snakemake pid %d, listening on %s", workers, parent, path)
        coordinator = _Coordinator(listener, workers, algorithms)
        while os.getppid() == parent:  # reparented: snakemake is gone
            coordinator.step(timeout=1.0)
    finally:
        listener.close()
        path.unlink(missing_ok=True)
        _pid_path(path).unlink(missing_ok=True)
        if coordinator is not None:
            coordinator.close()
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpsrl.training.workers", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("serve", help="run a pool (snakemake's onstart hook starts it)")
    p.add_argument("--socket", type=Path, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--parent", type=int, required=True, help="stop when this process ends")
    p.add_argument("--algorithms", nargs="*", default=[], help="import these ahead")
    p = sub.add_parser("submit", help="train an `hpsrl train` command's job on the pool")
    p.add_argument("socket")
    p.add_argument("train_command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    if args.action == "serve":
        serve(args.socket, args.workers, args.parent, args.algorithms)
        return 0
    command = args.train_command
    return submit(args.socket, command[1:] if command[:1] == ["--"] else command)


if __name__ == "__main__":
    sys.exit(main())
