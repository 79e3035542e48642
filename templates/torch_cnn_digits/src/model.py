"""A small convolutional network for small single-channel images such as 8x8 digits."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ConvNet(nn.Module):
    """Two 3x3 convolutions (the first batch-normalised), a 2x2 max-pool and a linear head.

    ``input_shape`` is ``(channels, height, width)`` of one sample; height and width
    must be even. For the 8x8 digits it has about 15k parameters.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), num_classes: int = 10) -> None:
        super().__init__()
        channels, height, width = (int(n) for n in input_shape)
        if height % 2 or width % 2:
            raise ValueError(f"input_shape {tuple(input_shape)}: height and width must be even")
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(32 * (height // 2) * (width // 2), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(torch.flatten(self.features(x), 1))
        return logits
