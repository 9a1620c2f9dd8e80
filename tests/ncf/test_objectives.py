"""Training objectives (ncf.objectives): each loss and gradient against a hand computation, the grouped
training layout, fits through the CLI with each objective, and resume under the grouped layout."""
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import ModelCheckpoint

from ncf import NCFDataModule
from ncf.cli import main as cli_main
from ncf.loaders import TrainLoader
from ncf.errors import ConfigError
from ncf.objectives import BPR, PointwiseLogLoss, SampledSoftmax, as_objective, bpr_loss, sampled_softmax_loss
from ncf.sampling import pair_keys
from tests.conftest import write_tiny
from tests.helpers import module as make_module
from tests.ncf.test_module import _Kill, _Killed

REPO = Path(__file__).resolve().parents[2]

POS = [0.5, -1.0]
NEG = [[0.2, 1.5, -0.3], [-2.0, 0.0, -1.0]]


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _grads(fn, *values):
    ts = [torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in values]
    loss = fn(*ts)
    loss.backward()
    return loss.item(), [t.grad for t in ts]


def _close(got: torch.Tensor, want) -> None:
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)


def test_pointwise_log_loss_by_hand():
    logits, labels = [0.5, -1.0, 2.0], [1.0, 0.0, 0.0]
    loss, (g, _) = _grads(lambda s, y: PointwiseLogLoss().loss(s, y), logits, labels)
    n = len(logits)
    want = sum(-y * math.log(_sigmoid(s)) - (1 - y) * math.log(1 - _sigmoid(s)) for s, y in zip(logits, labels)) / n
    assert loss == pytest.approx(want, abs=1e-12)
    _close(g, [(_sigmoid(s) - y) / n for s, y in zip(logits, labels)])


def test_bpr_by_hand():
    loss, (gp, gn) = _grads(BPR().loss, POS, NEG)
    b, k = len(POS), len(NEG[0])
    want = sum(-math.log(_sigmoid(p - n)) for p, row in zip(POS, NEG) for n in row) / (b * k)
    assert loss == pytest.approx(want, abs=1e-12)
    # d/dn softplus(n - p) = sigmoid(n - p); the positive gets minus the sum over its negatives
    _close(gn, [[_sigmoid(n - p) / (b * k) for n in row] for p, row in zip(POS, NEG)])
    _close(gp, [-sum(_sigmoid(n - p) for n in row) / (b * k) for p, row in zip(POS, NEG)])
    assert float(bpr_loss(torch.tensor([0.0]), torch.tensor([[1e4]]))) == pytest.approx(1e4)  # no overflow


@pytest.mark.parametrize("t", [1.0, 0.25])
def test_sampled_softmax_by_hand(t):
    loss, (gp, gn) = _grads(SampledSoftmax(temperature=t).loss, POS, NEG)
    b = len(POS)
    want, soft = 0.0, []
    for p, row in zip(POS, NEG):
        ex = [math.exp(s / t) for s in [p] + row]
        want += -math.log(ex[0] / sum(ex)) / b
        soft.append([e / sum(ex) for e in ex])
    assert loss == pytest.approx(want, abs=1e-12)
    # d/ds_c = (softmax_c - [c is the positive]) / (B T)
    _close(gp, [(s[0] - 1) / (b * t) for s in soft])
    _close(gn, [[x / (b * t) for x in s[1:]] for s in soft])
    big = sampled_softmax_loss(torch.tensor([1e4]), torch.tensor([[0.0, 1e4 + 1.0]]), t)  # no overflow
    assert float(big) == pytest.approx(math.log1p(math.exp(1.0 / t)), abs=1e-2)  # float32 near 1e4


def test_objective_specs_and_errors():
    s = SampledSoftmax(temperature=0.5)
    assert s.spec() == {"class_path": "ncf.objectives.SampledSoftmax", "init_args": {"temperature": 0.5}}
    assert as_objective(s.spec()) == s and as_objective(None) == PointwiseLogLoss()
    assert as_objective({"class_path": "ncf.objectives.BPR", "init_args": {}}) == BPR()
    with pytest.raises(ConfigError, match="temperature must be a positive number, not 0"):
        SampledSoftmax(temperature=0)
    with pytest.raises(ConfigError, match=r"'os.system' is not a known objective.*ncf.objectives.BPR"):
        as_objective({"class_path": "os.system", "init_args": {"command": "true"}})
    with pytest.raises(ConfigError, match="did you mean ncf.objectives.BPR"):
        as_objective({"class_path": "mylib.BPR"})
    with pytest.raises(ConfigError, match="does not take"):
        as_objective({"class_path": "ncf.objectives.BPR", "init_args": {"margin": 1}})


def test_default_objective_keeps_the_module_as_it_was():
    """The default (and the pointwise log loss named explicitly) leaves no trace in the hyperparameters
    (so run identities and checkpoints are as before), and a training step is BCE on the pairs, bit for bit."""
    for objective in (None, PointwiseLogLoss(), {"class_path": "ncf.objectives.PointwiseLogLoss"}):
        m = make_module("neumf", 10, 20, factor=4, num_layers=2, weight_decay=0.01, objective=objective)
        assert "objective" not in m.hparams and isinstance(m.objective, PointwiseLogLoss)
    torch.manual_seed(0)
    m = make_module("gmf", 10, 20, factor=4)
    users, items, labels = torch.randint(10, (32,)), torch.randint(20, (32,)), torch.randint(2, (32,)).float()
    loss = m.training_step((users, items, labels), 0)
    (g,) = torch.autograd.grad(loss, [m.net.user_embedding.weight])
    ref = F.binary_cross_entropy_with_logits(m.net(users, items), labels)
    (g_ref,) = torch.autograd.grad(ref, [m.net.user_embedding.weight])
    assert torch.equal(loss, ref) and torch.equal(g, g_ref)
    m = make_module("gmf", 10, 20, factor=4, objective=SampledSoftmax(0.5))
    assert m.hparams["objective"] == {"class_path": "ncf.objectives.SampledSoftmax", "init_args": {"temperature": 0.5}}


@pytest.mark.parametrize("rows", [6, 64])  # 64 rows of 4 pairs: NeuMF's folded fast path
@pytest.mark.parametrize("network", ["ncf.models.GMF", "ncf.models.NeuMF", "ncf.mf.MF"])
def test_grouped_step_scores_each_row(network, rows):
    """A grouped step is the objective over each row's logits: the positive against its own negatives,
    with the L2 penalty per (user, item) pair as in the pointwise layout."""
    from ncf import NCFModule

    torch.manual_seed(0)
    spec = {"class_path": network, "init_args": {"factor": 4}}
    m = NCFModule(spec, 30, 40, weight_decay=0.01, objective=BPR())
    users, items = torch.randint(30, (rows,)), torch.randint(40, (rows, 4))
    loss = m.training_step((users, items), 0)
    logits = torch.stack([m.net(users, items[:, c]) for c in range(4)], 1)
    pairs_u, pairs_i = users.repeat_interleave(4), items.reshape(-1)
    l2 = sum(e.pow(2).sum() for e in m.net.embed(pairs_u, pairs_i)) / len(pairs_u)
    want = bpr_loss(logits[:, 0], logits[:, 1:]) + 0.01 * l2
    torch.testing.assert_close(loss, want)
    # and its gradient (MF's rows: a matrix product and the penalty counted per table row)
    params = [p for p in m.net.parameters() if p.requires_grad]
    for got, ref in zip(torch.autograd.grad(loss, params), torch.autograd.grad(want, params)):
        torch.testing.assert_close(got, ref)
    # GMF and MF share each row's user embeddings across its pairs; NeuMF concatenates, so scores pairs
    assert m._rows_broadcast == (network != "ncf.models.NeuMF")


def _train_rows(n_users=30, n_items=60, seed=0):
    gen = torch.Generator().manual_seed(seed)
    users = torch.repeat_interleave(torch.arange(n_users), torch.randint(3, 40, (n_users,), generator=gen))
    items = torch.cat([torch.randperm(n_items, generator=gen)[:n] for n in torch.bincount(users).tolist()])
    return users, items


def test_grouped_loader_negatives_are_never_positives():
    users, items = _train_rows()
    positives = set(pair_keys(users, items, 60).tolist())
    loader = TrainLoader(users, items, 60, num_negatives=16, batch_size=50, seed=3, layout="grouped")
    assert len(loader) == math.ceil(len(users) / 50)
    epochs = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        batches = list(loader)
        u, i = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
        assert i.shape == (len(users), 17)
        assert sorted(pair_keys(u, i[:, 0], 60).tolist()) == sorted(positives)  # every positive once
        neg = pair_keys(u.repeat_interleave(16), i[:, 1:].reshape(-1), 60)
        assert not set(neg.tolist()) & positives  # never a training positive of the user
        epochs.append(i)
    assert torch.equal(epochs[0], epochs[2]) and not torch.equal(epochs[0], epochs[1])  # fresh per epoch, seeded
    # Under DDP each rank holds its own users' rows (together all of them) and runs as many steps.
    ranks = [TrainLoader(users, items, 60, 16, 20, seed=3, rank=r, world_size=2, layout="grouped") for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    seen = []
    for r in ranks:
        r.set_epoch(1)
        b_u, b_i = (torch.cat(t) for t in zip(*r))
        assert not set(pair_keys(b_u.repeat_interleave(16), b_i[:, 1:].reshape(-1), 60).tolist()) & positives
        seen.append(set(pair_keys(b_u, b_i[:, 0], 60).tolist()))
    assert not seen[0] & seen[1] and seen[0] | seen[1] == positives


def _config(tmp_path, objective: str, extra: str = "") -> Path:
    cfg = tmp_path / f"{objective.rsplit('.', 1)[-1].lower()}.yaml"
    cfg.write_text(f"""seed_everything: 0
trainer:
  max_epochs: 2
  accelerator: cpu
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  callbacks:
    - class_path: pytorch_lightning.callbacks.ModelCheckpoint
      init_args: {{dirpath: "{{runs}}/{{name}}/checkpoints", filename: best, monitor: val_ndcg10, mode: max}}
model:
  network: {{class_path: ncf.models.GMF, init_args: {{factor: 8}}}}
  lr: 0.01
  objective:
    class_path: {objective}
{extra}data:
  batch_size: 64
  num_negatives: 8
  num_eval_negatives: 20
""")
    return cfg


@pytest.mark.parametrize("objective, extra", [
    ("ncf.objectives.PointwiseLogLoss", ""),
    ("ncf.objectives.BPR", ""),
    ("ncf.objectives.SampledSoftmax", "    init_args: {temperature: 0.5}\n"),
])
def test_short_fit_through_the_cli(tmp_path, monkeypatch, objective, extra):
    from ncf.checkpoint import read_checkpoint

    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=30, n_items=50, per_user=12)
    cfg = _config(tmp_path, objective, extra)
    cli_main(["fit", "--config", str(cfg), "--data.dataset", str(data)])
    ckpt = read_checkpoint(next(tmp_path.glob("runs/tiny/*/checkpoints/best.ckpt")))  # weights_only=True
    stored = ckpt["hyper_parameters"].get("objective")
    if objective.endswith("PointwiseLogLoss"):
        assert stored is None  # the default: hyperparameters as they always were
    else:
        assert stored["class_path"] == objective
        assert stored["init_args"] == ({"temperature": 0.5} if "Softmax" in objective else {})
    # test and predict rebuild the module (and its objective) from the checkpoint
    cli_main(["test", "--config", str(cfg), "--data.dataset", str(data), "--ckpt_path",
              str(next(tmp_path.glob("runs/tiny/*/checkpoints/best.ckpt")))])


@pytest.mark.parametrize("init_args, args, message", [
    ("    init_args: {temperature: -1}\n", [], "temperature must be a positive number, not -1"),
    ("    init_args: {temprature: 0.5}\n", [], "sampledsoftmax.yaml, line 16: model.objective.init_args.temprature: "
     "unknown argument 'temprature' of ncf.objectives.SampledSoftmax; did you mean model.objective.init_args.temperature?"),
    ("", ["--model.objective", "ncf.objectives.BPR", "--model.objective.temperature", "2"],
     "--model.objective.temperature: unknown argument 'temperature' of ncf.objectives.BPR; it takes no arguments."),
    ("", ["--model.objective", "ncf.objectives.Softmax"],
     "--model.objective: 'ncf.objectives.Softmax' is not a known Objective; did you mean "
     "ncf.objectives.SampledSoftmax? use one of ncf.objectives.BPR, "),
])
def test_cli_refuses_a_bad_objective(tmp_path, monkeypatch, capsys, init_args, args, message):
    monkeypatch.chdir(tmp_path)
    data = write_tiny(tmp_path / "tiny.csv", n_users=30, n_items=50, per_user=12)
    cfg = _config(tmp_path, "ncf.objectives.SampledSoftmax", init_args)
    with pytest.raises(SystemExit) as exc:
        cli_main(["fit", "--config", str(cfg), "--data.dataset", str(data), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err


def test_resume_under_the_grouped_layout_matches_uninterrupted(tmp_path):
    data = write_tiny(tmp_path / "tiny.csv", n_users=40, n_items=60, per_user=12)
    dm = NCFDataModule(str(data), batch_size=32, num_negatives=8, num_eval_negatives=20)

    def trainer(folder, callbacks=()):
        ckpt = ModelCheckpoint(dirpath=str(folder), filename="best", monitor="val_ndcg10", mode="max", save_last=True)
        return pl.Trainer(max_epochs=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                          enable_model_summary=False, callbacks=[ckpt, *callbacks], default_root_dir=str(tmp_path))

    def module(objective=SampledSoftmax(0.5)):
        return make_module("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2, dropout=0.1, lr=0.01,
                         objective=objective)

    pl.seed_everything(7)
    full, m_full = trainer(tmp_path / "a"), module()
    full.fit(m_full, dm)
    pl.seed_everything(7)
    with pytest.raises(_Killed):
        trainer(tmp_path / "b", [_Kill(2)]).fit(module(), dm)
    pl.seed_everything(7)
    resumed, m_res = trainer(tmp_path / "b"), module()
    resumed.fit(m_res, dm, ckpt_path="last")
    for a, b in zip(m_full.parameters(), m_res.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert full.callback_metrics["val_ndcg10"] == resumed.callback_metrics["val_ndcg10"]
    # another objective is another run: resuming it is refused, naming the difference
    pl.seed_everything(7)
    with pytest.raises(ConfigError, match=r"model.objective .*SampledSoftmax.* there, .*BPR.* now"):
        trainer(tmp_path / "b").fit(module(BPR()), dm, ckpt_path="last")


def test_counterfactual_fine_tunes_in_the_objectives_layout(tmp_path):
    """explain.py --counterfactual fine-tunes a grouped-objective checkpoint in its own layout; removing a
    positive drops its row with its negatives."""
    from explain.counterfactual import finetune_without

    data = write_tiny(tmp_path / "tiny.csv", n_users=20, n_items=40, per_user=10)
    dm = NCFDataModule(str(data), batch_size=16, num_negatives=4, num_eval_negatives=20)
    pl.seed_everything(0)
    module = make_module("gmf", dm.num_users, dm.num_items, factor=4, lr=0.01, objective=BPR())
    ck = ModelCheckpoint(dirpath=str(tmp_path / "c"), filename="last")
    pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
               callbacks=[ck], default_root_dir=str(tmp_path)).fit(module, dm)
    path, sp = str(tmp_path / "c" / "last.ckpt"), dm.split
    none = torch.tensor([], dtype=torch.int64)
    a = finetune_without(path, sp, none, none, epochs=1, batch_size=16)
    u = int(sp.train_users[0])
    b = finetune_without(path, sp, torch.tensor([u]), sp.train_items[:1], epochs=1, batch_size=16)
    assert not torch.equal(a.user_embedding.weight[u], b.user_embedding.weight[u])


def test_mf_softmax_config_parses(ml_root, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NCF_DATA_DIR", str(ml_root))
    cli = cli_main(["--config", str(REPO / "configs" / "mf_softmax.yaml")], run=False)
    assert type(cli.model.net).__name__ == "MF" and isinstance(cli.model.objective, SampledSoftmax)
    assert cli.datamodule.hparams.num_negatives == 16
