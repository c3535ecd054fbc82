"""One client's local training, shared by the federation and by the attacks that replay what a
client would have sent (so the attacked update is computed by exactly the deployed code)."""

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from fedsafe.defenses.base import Defense, Weights
from fedsafe.seeding import derive_seed


@dataclass(frozen=True)
class TrainSettings:
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0
    optimizer: str = "sgd"
    # "cosine" anneals the learning rate over the rounds, from lr in round 1 to nearly 0 in the
    # last, so a model ends where it settled instead of still moving with the last update's noise
    lr_schedule: str = "constant"
    rounds: int = 1

    @classmethod
    def from_config(cls, fed: dict) -> "TrainSettings":
        return cls(**{k: fed[k] for k in cls.__dataclass_fields__ if k in fed})

    def for_round(self, rnd: int) -> "TrainSettings":
        """The settings a client trains with in round `rnd` (1-based): the scheduled lr."""
        if self.lr_schedule == "constant":
            return self
        factor = 0.5 * (1 + math.cos(math.pi * (rnd - 1) / max(1, self.rounds)))
        return replace(self, lr=self.lr * factor, lr_schedule="constant")


def pick_device(requested: str = "auto") -> str:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 images -> float in [0, 1] (attacks and models work in pixel space)."""
    return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)


def make_optimizer(model: nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    if s.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=s.lr)
    return torch.optim.SGD(model.parameters(), lr=s.lr, momentum=s.momentum)


def local_train(model: nn.Module, x: np.ndarray, y: np.ndarray, settings: TrainSettings,
                defense: Defense, seed: int, rnd: int, client: int, state: dict,
                device: str = "cpu", round_info: dict | None = None) -> tuple[Weights, dict]:
    """Train `model` (holding the weights the client received) on its data; return the update
    (new - received weights) after the client-side defense, i.e. what the server observes.
    `round_info` tells the defense who shares the round (see `Mechanism.begin_round`)."""
    defense.begin_round(round_info or {})
    settings = settings.for_round(rnd)
    received = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.manual_seed(derive_seed(seed, "train", rnd, client))  # dropout, Opacus noise
    data = torch.utils.data.TensorDataset(to_tensor(x), torch.from_numpy(y).long())
    loader = torch.utils.data.DataLoader(
        data, batch_size=settings.batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(derive_seed(seed, "order", rnd, client)))
    model.to(device).train()
    optimizer = make_optimizer(model, settings)
    model, optimizer, loader = defense.setup_training(model, optimizer, loader, state)
    loss_fn, losses = nn.CrossEntropyLoss(), []

    def step(xb, yb) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        return loss.item()

    for _ in range(settings.local_epochs):
        for xb, yb in loader:
            # Poisson sampling can draw an empty batch: it is still a step (DP-SGD adds noise
            # only), as the privacy accountant counts it
            loss = step(*defense.training_batch(model, xb.to(device), yb.to(device)))
            if len(yb):
                losses.append(loss)
    metrics = defense.post_training(model, *data.tensors, step, settings.batch_size)
    metrics.update(defense.finish_training(state))
    trained = getattr(model, "_module", model)  # Opacus wraps the model
    update = {k: v.detach().cpu() - received[k].cpu() for k, v in trained.state_dict().items()}
    update = defense.uplink(update, rnd, client)
    metrics.update(train_loss=float(np.mean(losses)) if losses else float("nan"),
                   num_examples=len(y))
    return update, metrics


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, device: str = "cpu",
             batch_size: int = 512) -> dict:
    model.to(device).eval()
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch_size):
        xb = to_tensor(x[i:i + batch_size]).to(device)
        yb = torch.from_numpy(y[i:i + batch_size]).long().to(device)
        logits = model(xb)
        loss += nn.functional.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return {"accuracy": correct / len(y), "loss": loss / len(y)}
