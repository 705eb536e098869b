"""The paper's study on your own data: any arrays, any number of classes and features.

python examples/own_data.py        # about a minute on 2 CPU cores
"""

import os

from sklearn.datasets import make_classification

from kdbench import Config, study

# stand-in for your data: 3 classes, 20 features (scale real features yourself, e.g. to [0, 1])
x, y = make_classification(
    n_samples=4000, n_features=20, n_informative=10, n_classes=3, random_state=0
)
x_train, y_train, x_test, y_test = x[:3000], y[:3000], x[3000:], y[3000:]

cfg = Config().with_overrides(
    repeats=3, members=5, teacher_hidden=(128, 64), student_hidden=(16,), temperature=4.0
)
if os.environ.get("KDBENCH_EXAMPLE") == "short":  # CI runs every example: the same steps, smaller
    cfg = cfg.with_overrides(repeats=2, members=2, epochs=1)
folder, summary = study(x_train, y_train, x_test, y_test, cfg, out="runs/own-data")
for row, values in summary["rows"].items():
    print(f"{row:<24} {values['mean_pct']:.2f}% test error")
for comparison in summary["comparisons"][:2]:
    print(comparison["verdict"])
print(f"report: {folder / 'report.md'}")
