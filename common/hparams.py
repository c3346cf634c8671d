"""Hyperparameters of the models and their training: plain dataclasses, importable without
torch (the run config and the run plan are read on machines and in processes that never
train)."""

from __future__ import annotations

from dataclasses import dataclass

MODEL_NAMES = ("popular", "bpr", "fedrec")  # the recommenders `fedrec train` can fit


@dataclass
class ModelConfig:
    """Shape and regularization of the model. `input_dim` is the frozen encoder's width."""

    input_dim: int = 384
    dim: int = 64
    num_experts: int = 4
    max_history: int = 50
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.2
    temperature: float = 0.07


@dataclass
class TrainConfig:
    """Optimization knobs. `lr` for shared parameters, `personal_lr` for personal vectors."""

    epochs: int = 40
    batch_size: int = 128
    lr: float = 2e-3
    personal_lr: float = 1e-2
    weight_decay: float = 1e-4
    negatives: int = 0
    seed: int = 0


@dataclass
class BPRConfig:
    """BPR-MF settings: the best validation NDCG@10 of benchmarks/baselines.py's sweeps on
    ML-100K's plain protocol (cold fraction 0; see docs/results.md for both protocols)."""

    dim: int = 64
    epochs: int = 300
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-3  # L2 on the embeddings a pair uses, per pair
    negatives: int = 4  # sampled per positive, uniformly among the user's unseen items
    eval_every: int = 5
    patience: int = 3
    seed: int = 0
