"""Where a campaign runs: the executor a run asked for, its Slurm jobs, the MPI ranks and threads
of a job, and the folder ``hpsrl init`` writes."""
