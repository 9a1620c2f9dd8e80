"""Counterfactual check of history explanations: take interactions out of training and see what happens.

For an explained pair (user, item), remove the user's top-k most influential training interactions, and,
as the control, k random interactions of the same user; then **fine-tune from the explained checkpoint**
(its weights, optimizer and learning-rate state, the training loop and negative sampling of
``train.py``) for a few epochs on the training rows that remain, and compare the explained item's logit
and rank with a run fine-tuned the same way with nothing removed. A removed interaction is then as if the
user never had it: it can be drawn as a negative for that user. Every arm uses the same seed, so the arms
differ only by what was removed.

Fine-tuning rather than retraining from scratch keeps the check cheap (seconds per arm) and free of
seed-to-seed noise between arms; it measures how the trained model responds to losing the interactions,
as influence estimates promise to first order. With ``batched=True`` (distinct users only) all pairs'
removals go into one fine-tuning run per arm: a user's rows touch only that user's embedding rows and
the removed items' rows, so the users barely interact, and three runs serve any number of users.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ncf.candidates import interacted_keys, rank_items
from ncf.checkpoint import check_state_digest, read_checkpoint
from ncf.loaders import TrainLoader
from ncf.errors import CheckpointError, ConfigError
from ncf.module import NCFModule
from ncf.splits import weighted_positives, without_rows

__all__ = ["finetune_without", "counterfactual", "CounterfactualPair"]


def finetune_without(ckpt_path: str, split, remove_users: torch.Tensor, remove_items: torch.Tensor,
                     epochs: int = 3, seed: int = 0, num_negatives: int = 4,
                     batch_size: int = 1024, negatives_seed: int = 0, recent_positives: int = 0,
                     recent_weight: int = 1) -> torch.nn.Module:
    """The checkpoint's network after ``epochs`` more epochs on ``split``'s training rows minus the given
    (user, item) rows, continuing its optimizer and learning-rate schedule; recent rows weighted as in
    training (:func:`ncf.splits.weighted_positives`)."""
    ckpt = read_checkpoint(ckpt_path)
    hp = ckpt["hyper_parameters"]
    params = inspect.signature(NCFModule).parameters
    module = NCFModule(**{k: v for k, v in hp.items() if k in params})
    module.load_state_dict(ckpt["state_dict"])
    module.net.observe(without_rows(split, remove_users, remove_items))  # a network reading the user's history reads it without them
    conf = module.configure_optimizers()
    opt = conf["optimizer"] if isinstance(conf, dict) else conf
    sched = conf["lr_scheduler"]["scheduler"] if isinstance(conf, dict) else None
    if ckpt.get("optimizer_states"):
        try:  # the optimizer state it continues from is checked, as a resume checks it
            check_state_digest(ckpt, str(ckpt_path))
        except CheckpointError as err:
            raise CheckpointError(f"{err} (--counterfactual fine-tunes from it: explain without --counterfactual, "
                                  f"or use an intact checkpoint)") from None
        opt.load_state_dict(ckpt["optimizer_states"][0])
    if sched is not None and ckpt.get("lr_schedulers"):
        sched.load_state_dict(ckpt["lr_schedulers"][0])
    # Every arm shuffles all training rows and skips its removed positives (with a grouped objective, the
    # removed positive's row and its negatives); the removed items may be drawn as the user's negatives
    # (they are unseen now).
    users, items = weighted_positives(split, recent_positives, recent_weight)
    loader = TrainLoader(users, items, split.n_items, num_negatives, batch_size,
                         negatives_seed, skip=(remove_users, remove_items), layout=module.objective.layout)
    start = int(ckpt.get("epoch", 0)) + 1
    torch.manual_seed(seed)
    module.train()
    for e in range(epochs):
        loader.set_epoch(start + e)
        module.on_train_epoch_start()
        for k, batch in enumerate(loader):
            loss = module.training_step(batch, k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if sched is not None:
            sched.step()
    return module.net.eval()


@dataclass
class CounterfactualPair:
    """One explained pair as trained (``original``) and under three arms: fine-tuned with nothing removed
    (``control``), without the top-k influential interactions (``top``), and without k random ones
    (``random``). Ranks are 1-based among the user's candidates
    (items never interacted with, training or held out; :mod:`ncf.candidates`), ties against the item (as HR@10)."""

    user: int
    item: int
    removed_top: list[int]
    removed_random: list[int]
    logit: dict[str, float]
    rank: dict[str, int]
    optimizer: str = "continued"  # "fresh" where the checkpoint holds weights only (a per-epoch checkpoint)

    @property
    def drop_top(self) -> float:
        return self.logit["control"] - self.logit["top"]

    @property
    def drop_random(self) -> float:
        return self.logit["control"] - self.logit["random"]


def counterfactual(ckpt_path: str, split, pairs: Sequence[tuple[int, int]], top: Sequence[Sequence[int]],
                   k: int = 5, epochs: int = 3, seed: int = 0, batched: bool = False,
                   data_hparams: Optional[dict] = None) -> list[CounterfactualPair]:
    """Remove each pair's ``top[p][:k]`` training items of its user (and, as control, ``k`` random ones
    drawn with ``seed``), fine-tune, and measure the pair again.

    Args:
        ckpt_path: the explained checkpoint.
        split: the data module's :class:`~ncf.splits.Split` it was trained on.
        pairs: ``(user, item)`` indices.
        top: per pair, the user's training items by decreasing influence (indices).
        batched: one fine-tuning run per arm for all pairs (their users must be distinct).
        data_hparams: the data module's settings (negatives per positive, batch size, negatives seed).
    """
    if k < 1 or epochs < 1:
        raise ConfigError(f"The counterfactual needs k >= 1 and epochs >= 1 (got {k}, {epochs}).")
    users = [u for u, _ in pairs]
    if batched and len(set(users)) != len(users):
        raise ConfigError("A batched counterfactual needs distinct users: one pair per user.")
    dh = data_hparams or {}
    tune = dict(epochs=epochs, seed=seed, num_negatives=int(dh.get("num_negatives", 4)),
                batch_size=int(dh.get("batch_size", 1024)), negatives_seed=int(dh.get("negatives_seed", 0)),
                recent_positives=int(dh.get("recent_positives", 0)), recent_weight=int(dh.get("recent_weight", 1)))
    gen = torch.Generator().manual_seed(seed)
    history = {u: split.train_items[split.train_users == u] for u in set(users)}
    removed_top = [list(map(int, t[:k])) for t in top]
    removed_random = []
    for u in users:
        h = history[u]
        removed_random.append(h[torch.randperm(len(h), generator=gen)[:k]].tolist())

    def run(removals: list[tuple[int, list[int]]]) -> torch.nn.Module:
        ru = torch.tensor([u for u, its in removals for _ in its], dtype=torch.int64)
        ri = torch.tensor([i for _, its in removals for i in its], dtype=torch.int64)
        return finetune_without(ckpt_path, split, ru, ri, **tune)

    from ncf.checkpoint import load_network

    original, _ = load_network(ckpt_path)
    optimizer = "continued" if read_checkpoint(ckpt_path).get("optimizer_states") else "fresh"
    control = run([])
    arms: list[dict[str, torch.nn.Module]] = []
    if batched:
        nets = {"control": control, "top": run(list(zip(users, removed_top))),
                "random": run(list(zip(users, removed_random)))}
        arms = [nets] * len(pairs)
    else:
        for p, u in enumerate(users):
            arms.append({"control": control, "top": run([(u, removed_top[p])]),
                         "random": run([(u, removed_random[p])])})
    known = interacted_keys(split)
    out = []
    for p, (u, i) in enumerate(pairs):
        logit, rank = {}, {}
        for arm, net in {"original": original, **arms[p]}.items():
            r, _, lg = rank_items(net, torch.tensor([u]), torch.tensor([i]), known)
            logit[arm], rank[arm] = float(lg[0]), int(r[0])
        out.append(CounterfactualPair(u, i, removed_top[p], removed_random[p], logit, rank, optimizer))
    return out
