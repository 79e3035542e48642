"""The task runner fx drives on a collaborator: weights in and out, train, validate.

Settings come from ``model.settings`` in plan/plan.yaml, overridden per task by the
task's own ``settings``:

    learning_rate, momentum, weight_decay   SGD options
    batch_size                              samples per step
    epochs                                  local passes over the training shard per task
    seed                                    model initialisation and shuffling
    device                                  "cpu" (default), "cuda" or "auto"
    threads                                 torch CPU threads (default 1)
    input_shape, num_classes                what one sample and its label look like
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fx.collaborator.runner import TaskResult

from .data import check_labels, load_split
from .model import ConvNet

log = logging.getLogger(__name__)


class DigitsCNN:
    """Trains :class:`~src.model.ConvNet` on this collaborator's shard under ``data_dir``.

    The shard (``train.npz`` / ``valid.npz``, see ``src/data.py``) is read on the
    first task, so a runner can be built, e.g. to export initial weights, without it.
    """

    def __init__(self, data_dir: Path, settings: Mapping[str, Any], collaborator: str) -> None:
        self.data_dir = Path(data_dir)
        self.settings = dict(settings)
        self.collaborator = collaborator
        # Process-wide: several collaborators on one small machine must not oversubscribe it.
        torch.set_num_threads(int(self.settings.get("threads", 1)))
        seed = int(self.settings.get("seed", 0))
        torch.manual_seed(seed)  # every site starts from the same initial model
        self.device = _pick_device(str(self.settings.get("device", "cpu")))
        self.input_shape = tuple(int(n) for n in self.settings.get("input_shape", (1, 8, 8)))
        self.num_classes = int(self.settings.get("num_classes", 10))
        self.model = ConvNet(self.input_shape, self.num_classes).to(self.device)
        self._shuffle = torch.Generator().manual_seed(seed)
        # Built once: the first optimizer in a process imports torch._dynamo (about a
        # second), which belongs to start-up, not to the first round's training.
        self._optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05)
        self._splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def get_weights(self) -> dict[str, np.ndarray]:
        """The model's state (parameters and buffers) as numpy copies, in state_dict order."""
        return {
            name: tensor.detach().to("cpu", copy=True).numpy()
            for name, tensor in self.model.state_dict().items()
        }

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Load weights with exactly the model's names, shapes and dtypes, else ``ValueError``."""
        state = self.model.state_dict()
        missing, unexpected = state.keys() - weights.keys(), weights.keys() - state.keys()
        if missing or unexpected:
            raise ValueError(
                f"weights do not fit the model: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}"
            )
        sources: dict[str, torch.Tensor] = {}
        for name, target in state.items():
            value = np.asarray(weights[name])
            expected_dtype = torch.empty(0, dtype=target.dtype).numpy().dtype
            if value.shape != tuple(target.shape) or value.dtype != expected_dtype:
                raise ValueError(
                    f"weight {name!r} is {value.dtype}{list(value.shape)}, the model needs "
                    f"{expected_dtype}{list(target.shape)}"
                )
            # Received tensors may be read-only views of a network buffer; torch wants
            # writable, C-ordered memory even though it only reads from it here.
            if not (value.flags.writeable and value.flags.c_contiguous):
                value = value.copy()
            sources[name] = torch.from_numpy(value)
        with torch.no_grad():  # all checked first, so a bad update leaves the model untouched
            for name, target in state.items():
                target.copy_(sources[name])

    def train(self, settings: Mapping[str, Any]) -> TaskResult:
        """Run ``epochs`` of SGD over the training shard; reports the mean training loss."""
        options = {**self.settings, **settings}
        epochs = int(options.get("epochs", 1))
        batch_size = int(options.get("batch_size", 32))
        x, y = self._split("train")
        if "round" in options:
            # Shuffle by (seed, round): a restarted site redoes a round exactly as before.
            self._shuffle.manual_seed(
                int(options.get("seed", 0)) * 1_000_003 + int(options["round"])
            )
        optimizer = self._optimizer
        # Momentum from the previous round belongs to a model that was replaced since.
        optimizer.state.clear()
        for group in optimizer.param_groups:
            group["lr"] = float(options.get("learning_rate", 0.05))
            group["momentum"] = float(options.get("momentum", 0.9))
            group["weight_decay"] = float(options.get("weight_decay", 0.0))
        loss_fn = nn.CrossEntropyLoss()
        self.model.train()
        total_loss, seen = 0.0, 0
        for _ in range(epochs):
            order = torch.randperm(len(y), generator=self._shuffle).to(self.device)
            for batch in torch.split(order, batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(self.model(x[batch]), y[batch])
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * len(batch)
                seen += len(batch)
        mean_loss = total_loss / seen if seen else math.nan
        return TaskResult(sample_count=len(y), metrics={"loss": mean_loss})

    def validate(self, settings: Mapping[str, Any]) -> TaskResult:
        """Accuracy and mean cross-entropy of the current model on the validation shard."""
        batch_size = int({**self.settings, **settings}.get("batch_size", 32))
        x, y = self._split("valid")
        self.model.eval()
        correct, total_loss = 0, 0.0
        with torch.no_grad():
            for xb, yb in zip(torch.split(x, batch_size), torch.split(y, batch_size), strict=True):
                logits = self.model(xb)
                total_loss += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
                correct += int((logits.argmax(dim=1) == yb).sum())
        n = len(y)
        return TaskResult(sample_count=n, metrics={"accuracy": correct / n, "loss": total_loss / n})

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The split as tensors on the device, read and checked once."""
        if split not in self._splits:
            x, y = load_split(self.data_dir, split)
            path = self.data_dir / f"{split}.npz"
            per_sample = math.prod(self.input_shape)
            if math.prod(x.shape[1:]) != per_sample:
                raise ValueError(
                    f"{path}: samples of shape {x.shape[1:]} do not fit the model's "
                    f"input_shape {list(self.input_shape)}; change model.settings.input_shape "
                    "in plan/plan.yaml (and src/model.py if needed)"
                )
            check_labels(path, y, self.num_classes)
            self._splits[split] = (
                torch.from_numpy(x.reshape(-1, *self.input_shape)).to(self.device),
                torch.from_numpy(y).to(self.device),
            )
        return self._splits[split]


def _pick_device(requested: str) -> torch.device:
    """``cpu``, or ``cuda`` when asked for ("cuda"/"auto") and present."""
    if requested not in {"cpu", "cuda", "auto"}:
        raise ValueError(f"settings.device must be 'cpu', 'cuda' or 'auto', not {requested!r}")
    if requested != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        log.warning("settings.device is 'cuda' but CUDA is not available; training on CPU")
    return torch.device("cpu")
