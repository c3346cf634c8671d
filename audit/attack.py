"""`fedrec audit attack CONFIG`: does an actual attack do better than the claimed ε allows?

**The attack** (DESIGN, "Dense is not safe by itself"). The adapter's first layers map public
item embeddings e_i (384-d) to the model; their update is a sum of outer products g_j e_jᵀ,
so its row space leans toward the embeddings of the items the client trained on. Given an
update ΔW (the stacked first-layer updates, rows × 384), the attacker scores every catalog
item by s_i = ‖ΔW ẽ_i‖ / ‖ẽ_i‖ (ẽ: embeddings minus their mean) — no training data needed,
only the public catalog and what the server sees.

**Canary test and one-run lower bound** (Steinke, Nasr & Jagielski, "Privacy auditing with one
(1) training run", NeurIPS 2023). Each of n trials takes a real user and a canary — one
record of `privacy.window` + 1 random catalog items, the record unit of `--dp record` — inserted with
probability ½. The released update (plain, DP-SGD at the audited ε, or the SecAgg+ sum of a
cohort) is scored by the canary items' mean s_i (z-scored within the update). The attacker
guesses "in" for the top k and "out" for the bottom k scores; r = 2k guesses with v correct.
Under ε-DP each guess is right with probability at most e^ε / (1 + e^ε), so with confidence
95 % ε ≥ the largest ε' with P[Binomial(r, e^ε'/(1+e^ε')) ≥ v] ≤ 5 % (δ ignored: with
δ = 1e-5 it moves the bound by ~r·δ). The bound is limited by r (reported as
`max_provable_epsilon`): 100 guesses (200 trials), all right, prove at most ε ≈ 3.5; 50
guesses at most ≈ 2.8.

Also reported: the ROC of the canary scores (AUC, TPR at 1 % and 5 % FPR) and the item-level
membership AUC of the user's real training items against all other items.

Each DP setting audits one release calibrated to spend exactly the stated ε (planned for one
participation), so the lower bound is compared with the ε of what was attacked.

The releases come from the device's own training, passed in as `device` (the CLI passes
`fedrec.client.attack_target.DeviceUpdates`): the audit itself depends on `fedrec.common` only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from fedrec.common.config import RunConfig

CONFIDENCE = 0.05


class Release(Protocol):
    """The update θ_local − θ_global (the shared arrays, float64) a device releases after
    training on `train_items` (item ids, oldest first): without DP (`epsilon` None; `seed` seeds
    the training) or with record-level DP-SGD calibrated to spend exactly `epsilon` in this one
    release (its randomness secret) — local noise, or with `shares` = m its share of distributed
    noise (m such releases summed carry the noise of one DP-SGD step)."""

    def __call__(self, train_items: np.ndarray, epsilon: float | None, seed: int,
                 shares: int | None = None) -> list[np.ndarray]: ...


Device = Callable[["RunConfig", np.ndarray], Release]  # device(cfg, item_embeddings)


@dataclass(frozen=True)
class Setting:
    """What the attacker sees: one client's update (`secagg` False) or the sum over a cohort,
    trained without DP (`epsilon` None) or with record-level DP-SGD at `epsilon`: local noise,
    or (`distributed`) each client's share of it, summed under SecAgg+."""

    name: str
    epsilon: float | None = None
    secagg: bool = False
    distributed: bool = False


DEFAULT_SETTINGS = (Setting("no protection"), Setting("DP ε=1", 1.0), Setting("DP ε=3", 3.0),
                    Setting("DP ε=8", 8.0), Setting("SecAgg+ (sum of cohort)", secagg=True),
                    Setting("distributed DP ε=8 (SecAgg+ sum)", 8.0, secagg=True,
                            distributed=True))


def epsilon_lower_bound(correct: int, guesses: int, beta: float = CONFIDENCE) -> float:
    """The one-run ε lower bound at confidence 1 − `beta` from `correct` of `guesses` right."""
    from scipy.stats import binom

    if guesses == 0:
        return 0.0

    def too_unlikely(eps: float) -> bool:  # P[Bin(r, p(ε)) ≥ v] ≤ β: ε is ruled out
        p = 1.0 / (1.0 + math.exp(-eps))
        return binom.sf(correct - 1, guesses, p) <= beta

    if not too_unlikely(0.0):
        return 0.0
    lo, hi = 0.0, 50.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if too_unlikely(mid) else (lo, mid)
    return lo


def auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with ties counted half)."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    if not len(positive) or not len(negative):
        return float("nan")
    scores = np.concatenate([positive, negative])
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    u = ranks[: len(positive)].sum() - len(positive) * (len(positive) + 1) / 2
    return float(u / (len(positive) * len(negative)))


def tpr_at_fpr(positive: np.ndarray, negative: np.ndarray, fpr: float) -> float:
    """Share of positives above the lowest threshold that at most ⌊fpr·n⌋ of the n negatives
    exceed (the (⌊fpr·n⌋+1)-th largest negative)."""
    if not len(positive) or not len(negative):
        return float("nan")
    ranked = np.sort(np.asarray(negative, float))[::-1]
    threshold = ranked[min(int(math.floor(fpr * len(ranked))), len(ranked) - 1)]
    return float(np.mean(np.asarray(positive) > threshold))


class Attack:
    """Released updates and their span scores for one data set and model config; `device`
    builds the attacked device's training from (`cfg`, the catalog's item embeddings)."""

    def __init__(self, cfg, device: Device, seed: int = 0):
        from fedrec.common.experiment import prepare

        self.cfg = cfg
        prepared = prepare(cfg, progress=False)
        self.split = prepared.split
        self.num_items, self.embedding_dim = prepared.item_embeddings.shape
        self.release = device(cfg, prepared.item_embeddings)
        centred = prepared.item_embeddings - prepared.item_embeddings.mean(axis=0)
        self.centred = centred / np.linalg.norm(centred, axis=1, keepdims=True)
        self.rng = np.random.default_rng(seed)
        self.canary_length = cfg.privacy.window + 1  # exactly one disjoint window: one record
        self.users = [u for u in range(self.split.num_users)
                      if len(self.split.train_sequences[u]) >= 2]

    def train_items(self, user: int, canary: np.ndarray | None) -> np.ndarray:
        items = np.asarray(self.split.train_sequences[user], dtype=np.int64)
        if canary is not None:  # the newest record: exactly one disjoint window
            items = np.concatenate([items, canary])
        return items

    def update(self, train_items: np.ndarray, epsilon: float | None,
               shares: int | None = None) -> list[np.ndarray]:
        """The update θ_local − θ_global this client would release (`shares`: distributed
        noise, see `Release`)."""
        return self.release(train_items, epsilon, seed=int(self.rng.integers(2**31)),
                            shares=shares)

    def scores(self, update: list[np.ndarray]) -> np.ndarray:
        """(n_items,) s_i = ‖ΔW ẽ_i‖ for unit ẽ_i, z-scored over the catalog; ΔW stacks the
        first layers (the arrays that take an item embedding as input)."""
        stacked = np.concatenate([a for a in update if a.ndim == 2 and a.shape[1] ==
                                  self.embedding_dim])
        s = np.linalg.norm(self.centred @ stacked.T, axis=1)
        return (s - s.mean()) / (s.std() + 1e-12)


def run(attack: Attack, setting: Setting, trials: int, cohort: int, progress=None) -> dict:
    """`trials` canary trials under `setting`; the attack's success and the ε lower bound."""
    rng = attack.rng
    n_items = attack.num_items
    scores_in, scores_out, member_aucs = [], [], []
    for _ in range(trials):
        user = int(rng.choice(attack.users))
        own = set(attack.split.train_sequences[user])
        canary = rng.choice(np.array([i for i in range(n_items) if i not in own]),
                            attack.canary_length, replace=False)
        inserted = bool(rng.random() < 0.5)
        shares = cohort if setting.distributed else None
        update = attack.update(attack.train_items(user, canary if inserted else None),
                               setting.epsilon, shares)
        cohort_items = set(own)
        if setting.secagg:  # the server sees only the sum over the cohort
            others = [u for u in attack.users if u != user]
            for other in rng.choice(others, cohort - 1, replace=False):
                other_update = attack.update(attack.train_items(int(other), None),
                                             setting.epsilon, shares)
                update = [a + b for a, b in zip(update, other_update)]
                cohort_items |= set(attack.split.train_sequences[int(other)])
        s = attack.scores(update)
        (scores_in if inserted else scores_out).append(float(s[canary].mean()))
        nonmembers = np.array([i for i in range(n_items) if i not in cohort_items
                               and i not in set(canary)])
        member_aucs.append(auc(s[sorted(own)], s[nonmembers]))
        if progress is not None:
            progress.update(1)
    scores_in, scores_out = np.array(scores_in), np.array(scores_out)
    everything = np.concatenate([scores_in, scores_out])
    truth = np.concatenate([np.ones(len(scores_in)), np.zeros(len(scores_out))])
    order = np.argsort(-everything, kind="stable")
    k = trials // 4  # guess "in" for the top quarter, "out" for the bottom quarter
    correct = int(truth[order[:k]].sum() + (1 - truth[order[len(order) - k:]]).sum())
    return {
        "setting": setting.name, "claimed_epsilon": setting.epsilon,
        "secagg": setting.secagg, "trials": trials,
        "canary_auc": auc(scores_in, scores_out),
        "tpr_at_1pct_fpr": tpr_at_fpr(scores_in, scores_out, 0.01),
        "tpr_at_5pct_fpr": tpr_at_fpr(scores_in, scores_out, 0.05),
        "guesses": 2 * k, "correct": correct,
        "epsilon_lower_bound": epsilon_lower_bound(correct, 2 * k),
        "max_provable_epsilon": epsilon_lower_bound(2 * k, 2 * k),
        "member_item_auc": float(np.nanmean(member_aucs)),
    }


def attack_all(cfg, device: Device, settings=DEFAULT_SETTINGS, trials: int = 200,
               cohort: int = 10, seed: int = 0, progress: bool = True) -> dict:
    """Every setting's attack results (see `run`), for `cfg`'s data set and model, on the
    releases of `device` (see `Attack`)."""
    from tqdm.auto import tqdm

    attack = Attack(cfg, device, seed)
    bar = tqdm(total=trials * len(settings), desc="attack trials", disable=not progress)
    results = []
    for setting in settings:
        bar.set_postfix(setting=setting.name)
        results.append(run(attack, setting, trials, cohort, bar))
    bar.close()
    return {"dataset": cfg.dataset, "trials": trials, "cohort": cohort, "seed": seed,
            "delta": cfg.privacy.delta, "results": results}


def table(report: dict) -> str:
    rows = ["| setting | claimed ε | canary AUC | TPR @1% FPR | TPR @5% FPR | correct / guesses "
            "| ε lower bound (max provable) | item-membership AUC |",
            "|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        claimed = "—" if r["claimed_epsilon"] is None else f"{r['claimed_epsilon']:g}"
        rows.append(f"| {r['setting']} | {claimed} | {r['canary_auc']:.3f} | "
                    f"{r['tpr_at_1pct_fpr']:.2f} | {r['tpr_at_5pct_fpr']:.2f} | "
                    f"{r['correct']} / {r['guesses']} | {r['epsilon_lower_bound']:.2f} "
                    f"({r['max_provable_epsilon']:.2f}) | "
                    f"{r['member_item_auc']:.3f} |")
    return "\n".join(rows)


def plot(report: dict, path: Path) -> None:
    from fedrec.common.plots import pyplot, save_png

    plt = pyplot()
    results = report["results"]
    names = [r["setting"] for r in results]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(x - 0.2, [r["epsilon_lower_bound"] for r in results], 0.4,
           label="empirical ε lower bound (95 %)")
    claimed = [r["claimed_epsilon"] if r["claimed_epsilon"] is not None else np.nan
               for r in results]
    ax.bar(x + 0.2, claimed, 0.4, label="claimed ε (of the attacked release)")
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylabel("ε")
    ax.set_title(f"membership attack on released updates ({report['dataset']}, "
                 f"{report['trials']} canaries)")
    ax.legend()
    fig.tight_layout()
    save_png(fig, path, dpi=110)
