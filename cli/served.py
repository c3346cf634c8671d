"""The model a run directory serves, whichever command wrote it, for `fedrec evaluate` and
`fedrec recommend`:

- `fedrec train`: the fitted recommender (`model.json` + `model.safetensors`);
- `fedrec simulate`: the shared head of the round the run serves (`metrics.json`'s
  `selected_round`, `checkpoints/round-NNNNNN.safetensors`) with each simulated user's personal
  vector reconstructed against it from the state on that user's virtual device
  (`RUN/clients/NNNNNN.sqlite`), as the run's own central evaluation did
  (`fedrec.simulation.run.central_evaluator`), so evaluating it gives the run's metrics.

A deployment's run directory serves no users here: their data and personal state are on their
devices."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedrec.client.personal import CHUNK as _CHUNK
from fedrec.client.personal import personalized_model, starting_point
from fedrec.common import config
from fedrec.common.errors import RunDirError
from fedrec.common.experiment import Prepared, prepare
from fedrec.common.model import FedRecModel, score_catalog
from fedrec.common.plan import RunPlan
from fedrec.common.recommenders import Recommender, load_recommender
from fedrec.server import checkpoint
from fedrec.server.records import CHECKPOINTS_DIR, PLAN
from fedrec.simulation.devices import DataSpec, VirtualDevice, store_path


@dataclass(frozen=True)
class LoadedRun:
    """A run directory's config, data (split and catalog embeddings as the run had them) and
    the model it serves. `label` names the model in tables."""

    config: config.RunConfig
    prepared: Prepared
    model: Recommender
    label: str


def load_run(run_dir: Path) -> LoadedRun:
    """The model `run_dir` serves: a `fedrec train` run or a `fedrec simulate` run."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.toml").exists():
        raise RunDirError(f"{run_dir}: not a run directory (no config.toml)")
    if (run_dir / PLAN).exists():
        return _load_federated(run_dir)
    if not (run_dir / "model.json").exists():
        raise RunDirError(f"{run_dir}: no trained model (neither model.json from `fedrec train` "
                          f"nor {PLAN} from `fedrec simulate`)")
    cfg = config.load(run_dir / "config.toml").validate()
    prepared = prepare(cfg, progress=False)
    return LoadedRun(cfg, prepared, load_recommender(run_dir, prepared.item_embeddings),
                     cfg.model)


def _load_federated(run_dir: Path) -> LoadedRun:
    plan = RunPlan.from_json((run_dir / PLAN).read_text(), str(run_dir / PLAN))
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.exists():
        raise RunDirError(f"{run_dir}: the federation has not finished (no metrics.json); "
                          f"finish it with `fedrec simulate --resume {run_dir}`")
    final = json.loads(metrics_path.read_text())
    if "ndcg@10" not in final:  # only the clients' own evaluations: a deployment
        raise RunDirError(f"{run_dir}: a deployment's run: its users' data and personal "
                          "vectors are on their devices (recommend there); the server holds "
                          f"only the shared head ({CHECKPOINTS_DIR}/)")
    round_ = int(final["selected_round"])
    path = checkpoint.round_path(run_dir / CHECKPOINTS_DIR, round_)
    if not path.exists():
        raise RunDirError(f"{path}: missing: the checkpoint of the round the run serves "
                          f"(metrics.json: selected_round = {round_})")
    _, shared, _ = checkpoint.load(path)
    missing = [k for k in plan.keys if k not in shared]
    if missing:
        raise RunDirError(f"{path}: lacks the shared arrays {missing[:3]} of the run's plan")
    prepared = prepare(plan.config, progress=False)
    if prepared.split.num_users != plan.num_clients:
        raise RunDirError(f"{run_dir}: data set '{plan.config.dataset}' now has "
                          f"{prepared.split.num_users} users; the run had {plan.num_clients}")
    model = FederatedRecommender(plan, [shared[k] for k in plan.keys], prepared, run_dir,
                                 round_)
    return LoadedRun(plan.config, prepared, model, f"fedrec (federated, round {round_})")


class FederatedRecommender(Recommender):
    """A simulation's served head, each user's personal vector reconstructed against it from
    the state the user's virtual device held after round `round_` (`starting_point`; none if
    the device never stored one). Reconstruction runs on first use of a user, for the chunk of
    users the run's central evaluation reconstructed it with, so every vector, and every
    metric, is the one the run computed: recommending for one user costs one chunk."""

    name = "fedrec"

    def __init__(self, plan: RunPlan, shared: list[np.ndarray], prepared: Prepared,
                 run_dir: Path, round_: int):
        self.plan, self.shared, self.run_dir, self.round = plan, shared, Path(run_dir), round_
        self.sequences = prepared.split.train_sequences
        self.embeddings = torch.as_tensor(prepared.item_embeddings)
        self.spec = DataSpec.of(plan)
        self.model = FedRecModel(plan.model, num_users=len(self.sequences))
        self.model.load_shared_arrays(shared)
        self.model.eval()
        self.reconstructed: set[int] = set()  # first users of the chunks done

    def _device_state(self, user: int) -> dict | None:
        path = store_path(self.run_dir, user)
        if not path.exists():  # the device never stored anything
            return None
        return starting_point(VirtualDevice(self.spec, user, path), self.round + 1,
                              self.plan.federation)

    def _personalize(self, users: np.ndarray) -> None:
        fed = self.plan.federation
        for lo in sorted({int(u) // _CHUNK * _CHUNK for u in users} - self.reconstructed):
            hi = min(lo + _CHUNK, len(self.sequences))
            states = [self._device_state(u) for u in range(lo, hi)]
            part = personalized_model(self.plan.model, self.embeddings, self.shared, states,
                                      self.sequences[lo:hi], fed.reconstruct_steps,
                                      fed.reconstruct_lr)
            with torch.no_grad():
                self.model.personal.vectors.weight[lo:hi] = part.personal.vectors.weight
            self.reconstructed.add(lo)

    def score(self, users, histories):
        self._personalize(np.asarray(users))
        return score_catalog(self.model, self.embeddings, users, histories).numpy()

    def item_vectors(self):
        with torch.no_grad():
            return self.model.item_vectors(self.embeddings).numpy()
