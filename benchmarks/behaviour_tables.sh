#!/usr/bin/env bash
# The free-energy tables of the default run and of quick variants of four example specs, with a
# fixed seed: run before and after a refactor of the orchestration and diff the outputs
# (wall-time lines excluded).
# Usage: benchmarks/behaviour_tables.sh OUTDIR [--no-default] [--untrained]
set -euo pipefail
out=${1:?usage: behaviour_tables.sh OUTDIR [--no-default]}
mkdir -p "$out"
bg=${BOLTZGEN:-.venv/bin/boltzgen}
run() {  # name spec-or-empty overrides...
  local name=$1 spec=$2; shift 2
  local sets=()
  for s in "$@"; do sets+=(--set "$s"); done
  $bg run $spec --quiet ${FORCE---force} --out "$out/$name.h5" "${sets[@]}" 2>&1 \
    | grep -v '^wall time' > "$out/$name.txt" || { echo "$name failed"; cat "$out/$name.txt"; }
  echo "== $name"; cat "$out/$name.txt"
}
run coulomb-n2-d2 runs/coulomb-n2-d2.toml train.steps=200 estimate.n_samples=8192
run ising-l8 runs/ising-l8.toml train.steps=200 estimate.n_samples=16384 refine.n_steps=20 \
  refine.n_chains=128
run sk-n20 runs/sk-n20.toml train.steps=200 estimate.n_samples=16384 refine.n_steps=20 \
  refine.n_chains=128
run dw4 runs/dw4.toml train.steps=300 data.n_samples=2048 data.n_holdout=1024 \
  estimate.n_samples=2048
if [[ "${2:-}" != "--no-default" && "${2:-}" != "--untrained" ]]; then run default ""; fi
# With train.steps=0 nothing is trained, so every number after training (estimates, refinement,
# references, held-out data) must be bit-identical between two versions of the orchestration.
if [[ "${3:-}" == "--untrained" || "${2:-}" == "--untrained" ]]; then
  run coulomb-n2-d2-untrained runs/coulomb-n2-d2.toml train.steps=0 estimate.n_samples=8192
  run ising-l8-untrained runs/ising-l8.toml train.steps=0 estimate.n_samples=16384 \
    refine.n_steps=20 refine.n_chains=128
  run sk-n20-untrained runs/sk-n20.toml train.steps=0 estimate.n_samples=16384 refine.n_steps=20 \
    refine.n_chains=128
  run dw4-untrained runs/dw4.toml train.steps=0 data.n_samples=2048 data.n_holdout=1024 \
    estimate.n_samples=2048
fi
