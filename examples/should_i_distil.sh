#!/usr/bin/env bash
# "Should I distil my model?" in one command: your images, your student and teacher modules,
# your recipe (SGD, cosine schedule, random crops). The report's first line is the answer: which
# way to train your student, by how much it beats hard labels (with its interval), at what cost.
#
#   bash examples/should_i_distil.sh        # about 5 minutes on 2 CPU cores
#
# Yours instead: save your images as an .npz (or a folder train/<class>/*.png, test/<class>/…),
# point --student-arch/--teacher-arch at your factories (package.module:Factory, importable:
# PYTHONPATH), and add flip to --augment where a mirror image is the same class (not digits).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-runs/should-i-distil}"
sizes="3000 1000" extra=""
if [ "${KDBENCH_EXAMPLE:-}" = short ]; then  # CI runs every example: the same steps, smaller
  sizes="600 200" extra="--repeats 2 --members 2 --epochs 1"
fi
python "$here/make_images.py" "$out.npz" $sizes
PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" python -m kdbench reproduce \
  --data "$out.npz" \
  --student-arch tiny_nets:TinyNet --teacher-arch tiny_nets:Teacher \
  --optimizer sgd --learning-rate 0.05 --nesterov --weight-decay 5e-4 --lr-schedule cosine --epochs 10 \
  --augment crop --crop-padding 2 --temperature 4 --controls smoothing \
  --repeats 10 --members 5 --quiet --out "$out" $extra
head -n 3 "$out/report.md"
