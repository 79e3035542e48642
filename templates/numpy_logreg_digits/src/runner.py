"""The task runner fx drives on a collaborator: softmax regression in plain numpy.

No deep-learning framework: the weights are two numpy arrays and the gradient is
written out by hand. Settings come from ``model.settings`` in plan/plan.yaml,
overridden per task by the task's own ``settings``:

    learning_rate, weight_decay   minibatch SGD options
    batch_size                    samples per step
    epochs                        local passes over the training shard per task
    seed                          shuffling
    num_features, num_classes     inputs per sample (after flattening) and label count
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fx.collaborator.runner import TaskResult

from .data import check_labels, load_split

DTYPE = np.float32


class SoftmaxRegression:
    """A linear classifier ``softmax(x @ weight + bias)`` trained on ``data_dir``'s shard.

    The shard (``train.npz`` / ``valid.npz``, see ``src/data.py``) is read on the
    first task, so a runner can be built, e.g. to export initial weights, without it.
    """

    def __init__(self, data_dir: Path, settings: Mapping[str, Any], collaborator: str) -> None:
        self.data_dir = Path(data_dir)
        self.settings = dict(settings)
        self.collaborator = collaborator
        self.num_features = int(self.settings.get("num_features", 64))
        self.num_classes = int(self.settings.get("num_classes", 10))
        # Zeros: the loss is convex, so no random start is needed and every site agrees.
        self.weights: dict[str, np.ndarray] = {
            "weight": np.zeros((self.num_features, self.num_classes), dtype=DTYPE),
            "bias": np.zeros(self.num_classes, dtype=DTYPE),
        }
        self._shuffle = np.random.default_rng(int(self.settings.get("seed", 0)))
        self._splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get_weights(self) -> dict[str, np.ndarray]:
        """Copies of ``weight`` (num_features x num_classes) and ``bias`` (num_classes)."""
        return {name: value.copy() for name, value in self.weights.items()}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Load weights with exactly these names, shapes and dtypes, else ``ValueError``."""
        missing, unexpected = (
            self.weights.keys() - weights.keys(),
            weights.keys() - self.weights.keys(),
        )
        if missing or unexpected:
            raise ValueError(
                f"weights do not fit the model: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}"
            )
        loaded = {}
        for name, current in self.weights.items():
            value = np.asarray(weights[name])
            if value.shape != current.shape or value.dtype != current.dtype:
                raise ValueError(
                    f"weight {name!r} is {value.dtype}{list(value.shape)}, the model needs "
                    f"{current.dtype}{list(current.shape)}"
                )
            loaded[name] = value.copy()  # own the memory: training updates it in place
        self.weights = loaded

    def train(self, settings: Mapping[str, Any]) -> TaskResult:
        """Run ``epochs`` of minibatch SGD over the training shard; reports the mean loss."""
        options = {**self.settings, **settings}
        epochs = int(options.get("epochs", 1))
        batch_size = int(options.get("batch_size", 16))
        learning_rate = DTYPE(options.get("learning_rate", 1.0))
        weight_decay = DTYPE(options.get("weight_decay", 0.0))
        x, y = self._split("train")
        if "round" in options:
            # Shuffle by (seed, round): a restarted site redoes a round exactly as before.
            self._shuffle = np.random.default_rng(
                [int(options.get("seed", 0)), int(options["round"])]
            )
        weight, bias = self.weights["weight"], self.weights["bias"]
        total_loss, seen = 0.0, 0
        for _ in range(epochs):
            order = self._shuffle.permutation(len(y))
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                xb, yb = x[rows], y[rows]
                probs = _softmax(xb @ weight + bias)
                total_loss += _cross_entropy(probs, yb) * len(rows)
                seen += len(rows)
                # d(mean cross-entropy)/d(logits) = (probs - onehot) / batch
                probs[np.arange(len(rows)), yb] -= 1.0
                probs /= len(rows)
                weight -= learning_rate * (xb.T @ probs + weight_decay * weight)
                bias -= learning_rate * probs.sum(axis=0)
        mean_loss = total_loss / seen if seen else math.nan
        return TaskResult(sample_count=len(y), metrics={"loss": mean_loss})

    def validate(self, settings: Mapping[str, Any]) -> TaskResult:
        """Accuracy and mean cross-entropy of the current weights on the validation shard."""
        x, y = self._split("valid")
        probs = _softmax(x @ self.weights["weight"] + self.weights["bias"])
        accuracy = float(np.mean(probs.argmax(axis=1) == y))
        return TaskResult(
            sample_count=len(y), metrics={"accuracy": accuracy, "loss": _cross_entropy(probs, y)}
        )

    def _split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The split with samples flattened to rows, read and checked once."""
        if split not in self._splits:
            x, y = load_split(self.data_dir, split)
            path = self.data_dir / f"{split}.npz"
            if math.prod(x.shape[1:]) != self.num_features:
                raise ValueError(
                    f"{path}: samples of shape {x.shape[1:]} have {math.prod(x.shape[1:])} "
                    f"values, the model has num_features={self.num_features}; change "
                    "model.settings.num_features in plan/plan.yaml"
                )
            check_labels(path, y, self.num_classes)
            self._splits[split] = (x.reshape(len(x), -1), y)
        return self._splits[split]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted: np.ndarray = np.exp(logits - logits.max(axis=1, keepdims=True))  # no overflow
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def _cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(picked, np.finfo(probs.dtype).tiny))))
