#!/usr/bin/env bash
# SST-2 from scratch on the CPU, three seeds: train each (15 minutes at most), score dev.tsv and
# test.tsv, then print the mean and spread of the accuracies.
#   bash scripts/sst2.sh [DATA_DIR] [RUN_PREFIX] [SEEDS...]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/sst2}
PREFIX=${2:-runs/sst2}
shift $(( $# > 2 ? 2 : $# ))
SEEDS=${*:-1 2 3}
MINITX=${MINITX:-$([ -x .venv/bin/minitx ] && echo .venv/bin/minitx || echo minitx)}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
runs=()
for seed in $SEEDS; do
  run="${PREFIX}_seed${seed}"
  start=$(date +%s)
  "$MINITX" train configs/sst2.yaml --set data.path="$DATA" --set run.seed="$seed" \
    --set run.device=cpu --run-dir "$run" --quiet
  echo "seed $seed: training took $(( $(date +%s) - start )) s"
  "$MINITX" eval "$run" --split validation --quiet
  "$MINITX" eval "$run" --split test --quiet
  runs+=("$run")
done
"$PYTHON" - "${runs[@]}" <<'PY'
import json, statistics, sys
rows = []
for run in sys.argv[1:]:
    dev = json.load(open(f"{run}/eval/validation.json"))
    test = json.load(open(f"{run}/eval/test.json"))
    rows.append((run, dev["accuracy"], test["accuracy"], dev["checkpoint_step"]))
print(f"{'run':<28} {'dev acc':>8} {'test acc':>9} {'best step':>10}")
for run, dev, test, step in rows:
    print(f"{run:<28} {dev:>8.2f} {test:>9.2f} {step:>10}")
for name, column in (("dev", 1), ("test", 2)):
    values = [row[column] for row in rows]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    print(f"{name}: mean {statistics.mean(values):.2f} ± {spread:.2f} (sample std), "
          f"min {min(values):.2f}, max {max(values):.2f} over {len(values)} seeds")
PY
