"""Bring your own teacher, get your student back.

A small convolutional network, trained here by your own loop (for a conv teacher kdbench trains
itself, see `own_module.py`), is the teacher; kdbench then distils the paper's students from it,
against the hard-label student and the ensemble, and hands the distilled student back as an
`nn.Module`, checked against the ONNX file it exports.

python examples/own_teacher.py        # about three minutes on 2 CPU cores
"""

import os

import torch
from torch import nn

import kdbench

# The data kdbench's models see: MNIST flattened to 784 values in [0, 1] (`student.preprocessing`
# says the same). Your teacher takes those rows; reshape inside it as it needs.
SHORT = os.environ.get("KDBENCH_EXAMPLE") == "short"  # CI runs every example: the same, smaller
N = 1000 if SHORT else 10000
mnist = kdbench.dataset("mnist")  # .x_train [N, 784] float32 in [0, 1], .y_train, .x_test ...
x, y = mnist.x_train[:N], mnist.y_train[:N]


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.head = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x):  # x: [N, 784] as kdbench gives it
        return self.head(self.features(x.view(-1, 1, 28, 28)).flatten(1))


torch.manual_seed(0)
teacher = SmallCNN()
opt = torch.optim.Adam(teacher.parameters(), lr=1e-3)
for _epoch in range(
    1 if SHORT else 2
):  # the first 10,000 training images: kdbench's own runs see the same ones
    for i in torch.randperm(len(x)).split(64):
        opt.zero_grad()
        nn.functional.cross_entropy(teacher(x[i]), y[i]).backward()
        opt.step()

# The study, with your teacher in the teacher's row (not retrained; its logits are computed once
# and kept in the run folder). A file works too: `teacher="teacher.onnx"`, or its logits as
# .safetensors / .npy, or `kdbench reproduce --own-teacher teacher.onnx` on the command line.
cfg = kdbench.Config().with_overrides(repeats=3, members=5, train_limit=N, temperature=4.0)
if SHORT:
    cfg = cfg.with_overrides(repeats=2, members=2, epochs=1)
folder, summary = kdbench.reproduce(cfg, "runs/own-teacher", teacher=teacher)
for row, values in summary["rows"].items():
    print(f"{row:<24} {values['mean_pct']:.2f}% test error")
print(summary["comparisons"][0]["verdict"])  # student from your teacher vs hard labels

# Your student back, as an ordinary nn.Module in eval mode, and the same model as ONNX.
student = kdbench.load(folder, "student_from_teacher", repeat=0)
print(student)
print("inputs:", student.preprocessing)
with torch.no_grad():
    accuracy = (student(mnist.x_test).argmax(-1) == mnist.y_test).float().mean().item()
print(f"student test accuracy {100 * accuracy:.2f}%")
print(f"report: {folder / 'report.md'}")
print(f"export: kdbench export {folder} --role student_from_teacher")
