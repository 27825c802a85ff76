"""Running training jobs: one job's seeds over MPI ranks (:mod:`hpsrl.training.train`), its typed
request, the warm pool of a local run, and what a failed step leaves behind for the rerun."""
