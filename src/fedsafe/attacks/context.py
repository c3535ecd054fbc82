"""What an attack job gets: the trained cell as deployed, loaded once and shared by every attack."""

from dataclasses import dataclass, field
from pathlib import Path

import torch

from fedsafe.data.prepare import PreparedData, load_prepared
from fedsafe.defenses.base import Defense, build_defense
from fedsafe.files import load_torch
from fedsafe.models import build_model_for


@dataclass
class AttackContext:
    spec: dict  # the cell's train spec (dataset, defense, noise, seed, federation, ...)
    data: PreparedData
    weights: dict  # final global model
    checkpoints: dict  # round -> global weights, for update-based attacks
    train_result: dict
    device: str = "cpu"
    out_dir: Path = Path(".")  # where an attack may save extra files (reconstruction grids)
    canaries: Path | None = None  # the cell's canaries file (arrays only if it was audited)
    reference_path: Path | None = None  # reference models of the dataset (RMIA, LiRA)
    # round -> the server's recorded view (observed.pt): clients, num_examples, updates as
    # received (None under secagg), aggregate, global_before; what inversion attacks read
    observed: dict = field(default_factory=dict)
    defense: Defense = field(init=False)

    def __post_init__(self):
        s = self.spec
        self.defense = build_defense(s["parts"], s["noise"], s["options"], s["seed"],
                                     name=s["defense"])

    @property
    def seed(self) -> int:
        return int(self.spec["seed"])

    def new_model(self, weights: dict | None = None) -> torch.nn.Module:
        model = build_model_for(self.spec["model"], self.data.manifest)
        model.load_state_dict(self.weights if weights is None else weights)
        return model.to(self.device).eval()

    def client_copies(self, draw: int = 0) -> list[torch.nn.Module]:
        """The final global model as each client receives it (after any downlink defense).
        `draw` picks a fresh noise draw, for evaluating randomised defenses over many draws."""
        rnd = int(self.spec["federation"]["rounds"]) + 1 + draw
        return [self.new_model(self.defense.downlink(self.weights, rnd, c))
                for c in range(len(self.data.clients))]


def load_context(data_dir: Path, files: dict[str, Path], spec: dict, train_result: dict,
                 device: str = "cpu", out_dir: Path = Path("."),
                 reference_path: Path | None = None) -> AttackContext:
    """The cell as trained, from its files {"model", "checkpoints", "observed" (the server's
    recorded view; a missing one is empty), "canaries" (optional)}."""
    weights = load_torch(files["model"], device)
    checkpoints = load_torch(files["checkpoints"], device)
    view = load_torch(files["observed"], device) if Path(files["observed"]).exists() else {}
    return AttackContext(spec, load_prepared(data_dir), weights, checkpoints, train_result, device,
                         out_dir, files.get("canaries"), reference_path, view)


def run_attack(kind: str, ctx: AttackContext, options: dict) -> list[dict]:
    from fedsafe.attacks import ATTACKS

    return ATTACKS.load(kind)(ctx, options)
