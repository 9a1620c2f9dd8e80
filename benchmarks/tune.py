"""One hyperparameter trial on MovieLens-100k in a bare PyTorch loop (the same data path, models and
metrics as training, without the Trainer, so a sweep runs quickly). Prints one JSON line with the best
validation NDCG@10, the test HR@10 / NDCG@10 at that epoch, and the per-epoch history
``[val_ndcg, test_hr, test_ndcg]``. The sweep in BENCHMARKS.md ("What was tried") was run with it.

    python benchmarks/tune.py --model gmf --factor 32 --wd 0.01 --lr 0.002 --decay 0.93 --epochs 40
    python benchmarks/tune.py --model neumf --factor 32 --init gmf.pt,mlp.pt --alpha 0.7 --opt sgd --lr 0.001
"""
from __future__ import annotations

import argparse
import json
import time

from _common import data_root

import torch
import torch.nn.functional as F

from ncf.data import TrainLoader, load_dataset
from ncf.metrics import hit_ndcg
from ncf.models import build_model
from ncf.splits import leave_one_out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="neumf")
    p.add_argument("--factor", type=int, default=8)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--bs", type=int, default=1024)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=0.0, help="L2 on the batch's embedding rows, per sample")
    p.add_argument("--neg", type=int, default=4)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--decay", type=float, default=1.0, help="per-epoch learning-rate factor")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--opt", default="adam", choices=["adam", "sgd"])
    p.add_argument("--init", default=None, help="GMF,MLP state-dict files (from --save) to pretrain NeuMF")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--save", default=None, help="save the best-validation state dict here")
    a = p.parse_args()
    torch.set_num_threads(1)
    sp = leave_one_out(load_dataset("ml-100k", data_root()))
    torch.manual_seed(a.seed)
    net = build_model(a.model, sp.n_users, sp.n_items, a.factor, a.layers, a.dropout)
    if a.init:
        g, m = a.init.split(",")
        gmf = build_model("gmf", sp.n_users, sp.n_items, a.factor)
        gmf.load_state_dict(torch.load(g, weights_only=True))
        mlp = build_model("mlp", sp.n_users, sp.n_items, a.factor, a.layers, a.dropout)
        mlp.load_state_dict(torch.load(m, weights_only=True))
        net.load_pretrained(gmf, mlp, a.alpha)
    opt = torch.optim.Adam(net.parameters(), lr=a.lr) if a.opt == "adam" else torch.optim.SGD(net.parameters(), lr=a.lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, a.decay)
    loader = TrainLoader(sp.train_users, sp.train_items, sp.n_items, a.neg, a.bs, seed=a.seed)

    def evaluate(users, cands):
        net.eval()
        with torch.no_grad():
            s = net(users.repeat_interleave(cands.shape[1]), cands.reshape(-1)).view(cands.shape)
        net.train()
        hit, ndcg = hit_ndcg(s)
        return hit.mean().item(), ndcg.mean().item()

    best, hist, t0 = (-1.0, (0.0, 0.0), -1), [], time.time()
    for epoch in range(a.epochs):
        loader.set_epoch(epoch)
        for u, i, y in loader:
            loss = F.binary_cross_entropy_with_logits(net(u, i), y)
            if a.wd:
                loss = loss + a.wd * sum(e.pow(2).sum() for e in net.embed(u, i)) / len(u)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        val = evaluate(sp.val_users, sp.val_candidates)
        test = evaluate(sp.test_users, sp.test_candidates)
        hist.append([round(val[1], 4), round(test[0], 4), round(test[1], 4)])
        if val[1] > best[0]:
            best = (val[1], test, epoch)
            if a.save:
                torch.save(net.state_dict(), a.save)
    print(json.dumps({"benchmark": "tune", "args": vars(a), "best_val_ndcg10": round(best[0], 4),
                      "test_hr10": round(best[1][0], 4), "test_ndcg10": round(best[1][1], 4), "best_epoch": best[2],
                      "seconds": round(time.time() - t0, 1), "history": hist}))


if __name__ == "__main__":
    main()
