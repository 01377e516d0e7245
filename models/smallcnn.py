"""SmallCNN for MNIST, the 4-conv / 3-FC network used by TRADES and Feature Scattering follow-ups."""
from __future__ import annotations

from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32, drop: float = 0.5):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, w, 3), nn.ReLU(),
            nn.Conv2d(w, w, 3), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * w * 4 * 4, 200), nn.ReLU(),
            nn.Dropout(drop),
            nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
