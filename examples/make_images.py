"""A stand-in for your image data, made offline: the first 3,000 training and 1,000 test images
of the MNIST kdbench bundles, saved as you would save yours (`x_train` `[N, H, W]` uint8,
`y_train`, `x_test`, `y_test`; `[N, H, W, C]` for colour) in one .npz.

python examples/make_images.py runs/images.npz [N_TRAIN N_TEST]
"""

import sys
from pathlib import Path

import numpy as np

from kdbench.data import datasets as data

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/images.npz")
n_train, n_test = (int(v) for v in sys.argv[2:4]) if len(sys.argv) > 3 else (3000, 1000)
a = data.load_arrays("mnist")
out.parent.mkdir(parents=True, exist_ok=True)
np.savez_compressed(
    out,
    x_train=a["train_images"][:n_train].reshape(-1, 28, 28),
    y_train=a["train_labels"][:n_train],
    x_test=a["test_images"][:n_test].reshape(-1, 28, 28),
    y_test=a["test_labels"][:n_test],
)
print(f"{out}: {n_train} training and {n_test} test images, 28x28, uint8")
