#!/usr/bin/env bash
# Set up hpsrl and run its whole test suite (unit tests, agents that learn, MPI jobs, tiny campaigns
# through snakemake). Extra arguments go to pytest, e.g. -m "not slow" for the quick part.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
exec python -m pytest "$@"
