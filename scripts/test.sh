#!/usr/bin/env bash
# Set up hpsrl and run its whole test suite (unit tests, agents that learn, MPI jobs, tiny campaigns
# through snakemake). Extra arguments go to pytest, e.g. -m "not slow" for the quick part.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate

# The Slurm integration tests need a real cluster: as root (CI), bring up the project's local
# cluster of 2 compute nodes (installs Debian's Slurm packages once; see tests/slurm/README.md).
if [ "$(id -u)" = 0 ] && [ "${HPSRL_SLURM_TESTS:-1}" != 0 ] && command -v apt-get >/dev/null; then
  bash tests/slurm/start.sh
else
  echo "test: not starting the local Slurm cluster (needs root and apt-get; HPSRL_SLURM_TESTS=0 also"
  echo "      skips it); the Slurm tests run only if a cluster answers sinfo and sacct"
fi

# The report's browser test loads it in headless Chromium: as root (CI), install Debian's chromium
# when it is missing (without recommended packages; a no-op once installed).
install_chromium() {
  local apt=(apt-get -o DPkg::Lock::Timeout=300 -y -qq --no-install-recommends)
  export DEBIAN_FRONTEND=noninteractive
  # a fresh container has no package lists, and stale ones 404: update once and retry
  "${apt[@]}" install chromium fonts-liberation || {
    apt-get -o DPkg::Lock::Timeout=300 -qq update && "${apt[@]}" install chromium fonts-liberation
  }
}
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "test: installing Debian's chromium for the report's browser test"
  apt_log=$(mktemp)
  install_chromium >"$apt_log" 2>&1 \
    || { cat "$apt_log" >&2; echo "test: could not install chromium (above)" >&2; }
  rm -f "$apt_log"
fi

# The linters, before any test: ruff (rules and formatting; pyproject.toml), snakefmt and
# snakemake's own lint of the workflow. A few seconds; a finding stops the run, as it stops CI.
ruff check --quiet .
ruff format --check --quiet .
snakefmt --check Snakefile workflow 2> /dev/null || { snakefmt --diff Snakefile workflow; exit 1; }
snakemake --lint -s Snakefile > /dev/null 2>&1 || {
  snakemake --lint -s Snakefile
  exit 1
}

exec python -m pytest "$@"
