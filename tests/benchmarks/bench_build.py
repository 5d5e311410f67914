"""Spec load + build time against the equivalent hand-written module's constructor.

Run: python tests/benchmarks/bench_build.py [--repeats N]
Prints the median of interleaved repetitions for each pair and the ratio (goal <= 1.1x).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torchvision
from torch import nn

from nnspec.compiler import build_model


class DigitsCNN(nn.Module):
    """specs/digits_cnn.yaml written by hand."""

    def __init__(self) -> None:
        super().__init__()
        layers, cin = [], 1
        for cout, stride in ((32, 1), (64, 2), (64, 1)):
            conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            layers += [conv, nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(64, 10)
        nn.init.xavier_uniform_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x):
        return self.classifier(self.dropout(self.features(x).mean((2, 3))))


PAIRS = {
    "digits_cnn": (lambda: build_model("specs/digits_cnn.yaml"), DigitsCNN),
    "mobilenet_v2": (lambda: build_model("specs/examples/mobilenet_v2.yaml"),
                     torchvision.models.mobilenet_v2),
    "densenet121": (lambda: build_model("specs/examples/densenet121.yaml"),
                    torchvision.models.densenet121),
}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'model':<14}{'nnspec load+build':>20}{'hand-written':>15}{'ratio':>8}")
    for name, (ours, theirs) in PAIRS.items():
        ours(), theirs()  # warm caches and imports
        a, b = [], []
        for _ in range(args.repeats):  # interleaved, so drift hits both alike
            a.append(timed(ours))
            b.append(timed(theirs))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{name:<14}{ma * 1e3:>17.1f} ms{mb * 1e3:>12.1f} ms{ma / mb:>8.2f}")


if __name__ == "__main__":
    main()
