#!/usr/bin/env bash
# Set up hpsrl and run the default campaign (config/config.yaml: PPO on CartPole-v1) on all of this
# machine's cores, then print its best configuration (its held-out test on fresh seeds first) and its
# per-generation status. Rerunning it after an
# interruption continues the campaign; rerunning it after it finished does nothing but print.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source .venv/bin/activate
snakemake --cores all
hpsrl best results/cartpole-ppo
hpsrl status results/cartpole-ppo
