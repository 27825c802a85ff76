"""All MPI use goes through here: one communicator, rank 0 coordinates and alone writes files.

Jobs are launched as ``mpiexec -n N python -m mpi4py -m hpsrl train ...`` (or ``srun``), so an
uncaught error on any rank aborts the whole communicator instead of leaving the others hanging.
Run without a launcher, the job is a single rank that does all the work itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any


class _SingleProcess:
    """The part of an mpi4py communicator we use, for a job started without MPI."""

    rank = 0
    size = 1

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def gather(self, obj: Any, root: int = 0) -> list[Any]:
        return [obj]


def world() -> Any:
    """MPI.COMM_WORLD, or a single-process stand-in when mpi4py or an MPI library is missing."""
    if os.environ.get("HPSRL_NO_MPI"):
        return _SingleProcess()
    try:
        from mpi4py import MPI
    except ImportError:
        return _SingleProcess()
    return MPI.COMM_WORLD


class TaskCounter:
    """Hands out task numbers 0, 1, 2, ... to whichever rank asks next, so a rank that finishes its
    task early takes the next one instead of waiting at the end for a slower rank.

    The counter lives in an MPI window on rank 0 and is read-and-incremented atomically
    (``Fetch_and_op``) inside one passive-target epoch that lasts the whole job: a rank asking for
    a task does not have to wait for rank 0 to enter MPI, which it does only between its own tasks.
    Creating and :meth:`close`-ing it are collective: every rank must call both.
    """

    def __init__(self, comm: Any) -> None:
        self._comm, self._next, self._win = comm, 0, None
        if comm.size == 1:
            return
        import numpy as np
        from mpi4py import MPI

        self._win = MPI.Win.Allocate(8 if comm.rank == 0 else 0, disp_unit=8, comm=comm)
        if comm.rank == 0:
            np.frombuffer(self._win.tomemory(), dtype=np.int64)[:] = 0
        comm.Barrier()  # nobody increments before rank 0 has zeroed the counter
        self._win.Lock_all()
        self._one, self._got = np.ones(1, dtype=np.int64), np.zeros(1, dtype=np.int64)

    def next(self) -> int:
        """The next task number (numbers past the last task mean: nothing left)."""
        if self._win is None:
            self._next += 1
            return self._next - 1
        from mpi4py import MPI

        self._win.Fetch_and_op(self._one, self._got, target_rank=0, op=MPI.SUM)
        self._win.Flush(0)
        return int(self._got[0])

    def close(self) -> None:
        if self._win is not None:
            self._win.Unlock_all()
            self._win.Free()
            self._win = None


def threads_per_rank() -> int:
    """Torch threads for one rank: the CPUs Slurm gave each task, else 1.

    One thread per rank is the safe default: on 2 cores, two processes with 2 torch threads each
    trained 20x slower than with 1 thread each.
    """
    for var in ("HPSRL_TORCH_THREADS", "SLURM_CPUS_PER_TASK"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def limit_threads() -> int:
    """Give this rank's torch and every BLAS/OpenMP pool in the process ``threads_per_rank()``
    threads; returns that count.

    ``torch.set_num_threads`` alone leaves numpy's OpenBLAS with a thread per core: two DQN ranks
    on 2 cores then trained 4-7x slower (395-771 instead of 2,700-3,000 steps/s, measured), each
    rank's BLAS threads fighting the other rank for the cores.
    """
    import torch
    from threadpoolctl import threadpool_limits

    threads = threads_per_rank()
    torch.set_num_threads(threads)
    threadpool_limits(threads)  # applies until the process ends (not used as a context here)
    return threads


def send_to_root(comm: Any, obj: Any, tag: int) -> Any:
    """Start sending ``obj`` to rank 0 without waiting for it to be received; returns the request,
    which must be waited for (``request.wait()``) before the process ends."""
    return comm.isend(obj, dest=0, tag=tag)


def arrived(comm: Any) -> Iterator[tuple[int, Any]]:
    """On rank 0: (tag, object) of each message other ranks sent that has arrived, not waiting."""
    if comm.size == 1:
        return
    from mpi4py import MPI

    status = MPI.Status()
    while comm.iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
        obj = comm.recv(source=status.Get_source(), tag=status.Get_tag())
        yield status.Get_tag(), obj


def next_arrival(comm: Any) -> tuple[int, Any]:
    """On rank 0: (tag, object) of the next message another rank sends, waiting for it."""
    from mpi4py import MPI

    status = MPI.Status()
    obj = comm.recv(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status)
    return status.Get_tag(), obj
