#!/usr/bin/env bash
# Sequence-level knowledge distillation on Multi30k de→en (docs/distillation.md): the teacher's
# beam-5 translations of the training set, then the same half-size student
# (configs/multi30k_student.yaml) trained three ways for the same time — on the original data, on
# the distilled data, on both — each scored on validation and test_2016_flickr with beam 5, and
# the decoding speed of teacher and student on test.
#   bash scripts/distill.sh TEACHER_RUN [OUT_DIR] [DATA_DIR]
# TEACHER_RUN is a trained run of configs/multi30k_de_en_raw.yaml (scripts/multi30k.sh makes one).
set -euo pipefail
cd "$(dirname "$0")/.."
TEACHER=${1:?usage: bash scripts/distill.sh TEACHER_RUN [OUT_DIR] [DATA_DIR]}
OUT=${2:-runs/distill}
DATA=${3:-../shared/data/multi30k}
MINITX=${MINITX:-$([ -x .venv/bin/minitx ] && echo .venv/bin/minitx || echo minitx)}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}
mkdir -p "$OUT/distilled"
start=$(date +%s)
"$MINITX" translate "$TEACHER" --split train --output "$OUT/distilled/train" --beam 5 --quiet
echo "translating the training set took $(( $(date +%s) - start )) s"
declare -A CORPORA=(
  [original]="[{path: $DATA}]"
  [distilled]="[{path: $OUT/distilled}]"
  [both]="[{path: $DATA}, {path: $OUT/distilled}]"
)
for name in original distilled both; do
  "$MINITX" train configs/multi30k_student.yaml --run-dir "$OUT/student_$name" \
    --set data.path="$DATA" --set "data.train_corpora=${CORPORA[$name]}" --set run.device=cpu
  "$MINITX" eval "$OUT/student_$name" --split validation --beam 5
  "$MINITX" eval "$OUT/student_$name" --split test --beam 5
done
for run in "$TEACHER" "$OUT/student_distilled"; do
  "$PYTHON" scripts/bench_decode.py --run-dir "$run" --split test --repeats 1
done
