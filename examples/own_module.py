"""Your own nn.Module as the student, a built-in conv net as the teacher, trained by kdbench.

kdbench trains 2 LeNet-5 teachers and, per repeat, an ensemble of your `TinyNet`s, a TinyNet on
hard labels and two distilled TinyNets, all as stacks (each member with its own seeds, shuffling,
Adam state and early stopping). Then the run folder is diagnosed, a student is exported to ONNX
(float32 and int8, checked against PyTorch) and handed back as an `nn.Module`.

python examples/own_module.py        # a few minutes on 2 CPU cores
"""

import os
import subprocess
import sys
from pathlib import Path

import torch
from tiny_nets import TinyNet  # this folder is on sys.path when the script runs

import kdbench

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/own-module")
cfg = kdbench.preset("paper").with_overrides(
    repeats=2, members=3, train_limit=5000, max_epochs=20, teacher_arch="lenet5"
)
if os.environ.get("KDBENCH_EXAMPLE") == "short":  # CI runs every example: the same steps, smaller
    cfg = cfg.with_overrides(members=2, train_limit=1000, epochs=1)
# `student=` takes the factory; config.json names it by its import string, tiny_nets:TinyNet
folder, summary = kdbench.reproduce(cfg, out, student=TinyNet)
for row, values in summary["rows"].items():
    print(f"{row:<22} {values['mean_pct']:.2f}% test error")
for comparison in summary["comparisons"]:
    print(comparison["verdict"])

# other processes import the factory by the same name: put its folder on PYTHONPATH
env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
kdbench_cli = [sys.executable, "-m", "kdbench"]
# the folder names your code (tiny_nets:TinyNet): commands that build its models import it only
# with --trust-code (a folder someone sends you must not run code you did not review)
subprocess.run([*kdbench_cli, "diagnose", str(folder), "--trust-code"], env=env, check=True)
subprocess.run(
    [*kdbench_cli, "export", str(folder), "--role", "student_from_ensemble", "--int8",
     "--trust-code"],
    env=env, check=True,
)  # fmt: skip

# your TinyNet, in eval mode
student = kdbench.load(folder, "student_from_ensemble", repeat=0, trust_code=True)
mnist = kdbench.dataset("mnist")  # as the models see it: flattened rows in [0, 1]
with torch.no_grad():
    images = mnist.x_test.view(-1, *student.input_shape)  # [N, 1, 28, 28]
    error = (student(images).argmax(1) != mnist.y_test).float().mean().item()
print(f"{type(student).__name__} back from {folder}: {100 * error:.2f}% test error")
