"""A stand-in for your image data, made offline: the first 3,000 training and 1,000 test images
of the MNIST kdbench bundles, saved as you would save yours (`x_train` `[N, H, W]` uint8,
`y_train`, `x_test`, `y_test`; `[N, H, W, C]` for colour) in one .npz.

python examples/make_images.py runs/images.npz [N_TRAIN N_TEST]
"""

import sys
from pathlib import Path

import numpy as np
import torch

import kdbench

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/images.npz")
n_train, n_test = (int(v) for v in sys.argv[2:4]) if len(sys.argv) > 3 else (3000, 1000)
mnist = kdbench.dataset("mnist")  # flattened rows in [0, 1]: back to 28x28 bytes


def images(x: torch.Tensor) -> np.ndarray:
    return (x * 255).round().to(torch.uint8).reshape(-1, 28, 28).numpy()


out.parent.mkdir(parents=True, exist_ok=True)
np.savez_compressed(
    out,
    x_train=images(mnist.x_train[:n_train]),
    y_train=mnist.y_train[:n_train].numpy(),
    x_test=images(mnist.x_test[:n_test]),
    y_test=mnist.y_test[:n_test].numpy(),
)
print(f"{out}: {n_train} training and {n_test} test images, 28x28, uint8")
