"""``python -m hpsrl`` (and ``python -m mpi4py -m hpsrl`` for MPI jobs)."""

import sys

from hpsrl.cli import main

sys.exit(main())
