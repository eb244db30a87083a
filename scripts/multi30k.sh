#!/usr/bin/env bash
# Multi30k German→English from the raw gzipped files, on the CPU: train (60 minutes at most), then
# score test_2016_flickr with beam 5 (sacreBLEU, cased, 13a, detokenized).
#   bash scripts/multi30k.sh [DATA_DIR] [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/multi30k}
RUN=${2:-runs/multi30k_de_en_raw}
MINITX=${MINITX:-$([ -x .venv/bin/minitx ] && echo .venv/bin/minitx || echo minitx)}
start=$(date +%s)
"$MINITX" train configs/multi30k_de_en_raw.yaml --set data.path="$DATA" --set run.device=cpu --run-dir "$RUN"
echo "training took $(( $(date +%s) - start )) s"
"$MINITX" eval "$RUN" --split test --beam 5
