"""A module of your own for kdbench to train (used by `own_module.py`).

A factory is anything that returns a fresh `nn.Module`: this class is one. kdbench seeds each
member before calling it, so every member gets its own initialisation from its own seed. Its
forward takes images, `[N, 1, 28, 28]` float32 (MNIST pixels divided by 255), and returns
`[N, 10]` logits. BatchNorm and Dropout are welcome: each member of a stack keeps its own
running statistics and draws its own dropout masks from its own seed.
"""

from torch import nn


class TinyNet(nn.Module):
    """A microcontroller-sized conv student: two strided 3x3 convs (8 and 16 filters), each
    with BatchNorm, dropout, one dense head: 7,042 parameters, 28 KB as float32."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, bias=False), nn.BatchNorm2d(8), nn.ReLU(),  # -> 13x13
            nn.Conv2d(8, 16, 3, stride=2, bias=False), nn.BatchNorm2d(16), nn.ReLU(),  # -> 6x6
        )  # fmt: skip
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(16 * 6 * 6, 10)

    def forward(self, x):
        return self.head(self.dropout(self.features(x).flatten(1)))


class Teacher(nn.Module):
    """A larger BatchNorm conv teacher for `TinyNet` (used by `should_i_distil.sh`): three 3x3
    convs (16, 32, 32 filters) with BatchNorm, two max-pools and a dense head on the 7x7 maps:
    29,818 parameters."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),  # -> 14x14
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),  # -> 7x7
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))
