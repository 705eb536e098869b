"""A module of your own for kdbench to train (used by `own_module.py`).

A factory is anything that returns a fresh `nn.Module`: this class is one. kdbench seeds each
member before calling it, so every member gets its own initialisation from its own seed. Its
forward takes what kdbench's models take, `[N, 784]` float32 (MNIST pixels divided by 255), and
returns `[N, 10]` logits. No BatchNorm and no dropout layers: a stack cannot keep their state per
member, and kdbench refuses them with one line rather than train them wrongly.
"""

from torch import nn


class TinyNet(nn.Module):
    """A microcontroller-sized conv student: two strided 3x3 convs (8 and 16 filters), one
    dense head: 7,018 parameters, 28 KB as float32."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(),  # 28x28 -> 13x13
            nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),  # -> 6x6
        )  # fmt: skip
        self.head = nn.Linear(16 * 6 * 6, 10)

    def forward(self, x):
        return self.head(self.features(x.view(-1, 1, 28, 28)).flatten(1))
