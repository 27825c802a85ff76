"""Where a campaign runs: the executor a run asked for, its Slurm jobs, the MPI ranks and threads
of a job (``hpsrl init``'s folder is :mod:`hpsrl.deploy`)."""
