"""The split as RecBole benchmark files (``ncf.export``): what is written is what the project trains and scores on."""
import pytest
import torch

from ncf.data import NCFDataModule
from ncf.datasets import DataError, load_interactions_file
from ncf.export import export_recbole, read_recbole
from ncf.splits import leave_one_out

FIELDS = ("train_users", "train_items", "val_users", "val_candidates", "test_users", "test_candidates")


def assert_same_split(back, split):
    assert (back.n_users, back.n_items) == (split.n_users, split.n_items)
    for name in FIELDS:
        a, b = getattr(back, name), getattr(split, name)
        assert (a is None) == (b is None), name
        if b is not None:
            assert torch.equal(a, b.to(torch.int64)), name


def test_movielens_split_round_trips(ml_root, tmp_path):
    dm = NCFDataModule("ml-100k", root=str(ml_root), download=False)
    dm.setup("fit")
    folder = export_recbole(dm.split, tmp_path / "ncf", "ncf")
    assert_same_split(read_recbole(folder, "ncf"), dm.split)
    # RecBole's benchmark files: one row per training interaction, per validation item and per test item
    lines = {s: (folder / f"ncf.{s}").read_text().splitlines() for s in ("train.inter", "valid.inter", "test.inter")}
    assert all(rows[0] == "user_id:token\titem_id:token" for rows in lines.values())
    assert [len(rows) - 1 for rows in lines.values()] == [100_000 - 2 * 943, 943, 943]
    cands = (folder / "ncf.test.candidates").read_text().splitlines()
    assert cands[0] == "user_id:token\titem_id:token\tlabel:float" and len(cands) == 1 + 943 * 100
    u, i = dm.split.test_users[0].item(), dm.split.test_candidates[0]
    assert cands[1:101] == [f"{u}\t{item}\t{int(k == 0)}" for k, item in enumerate(i.tolist())]


def test_split_without_validation_and_ids_that_are_not_numbers(tiny_csv, tmp_path):
    split = leave_one_out(load_interactions_file(str(tiny_csv)), validation=False, num_eval_negatives=5)
    folder = export_recbole(split, tmp_path / "tiny", "tiny")
    assert not (folder / "tiny.valid.inter").exists() and not (folder / "tiny.valid.candidates").exists()
    assert_same_split(read_recbole(folder, "tiny"), split)


def test_files_that_disagree_are_refused(tiny_csv, tmp_path):
    split = leave_one_out(load_interactions_file(str(tiny_csv)), num_eval_negatives=5)
    folder = export_recbole(split, tmp_path / "tiny", "tiny")
    path = folder / "tiny.test.inter"
    rows = path.read_text().splitlines()
    user, item = rows[1].split("\t")
    rows[1] = f"{user}\t{(int(item) + 1) % split.n_items}"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="disagree on the held-out items"):
        read_recbole(folder, "tiny")
    (folder / "tiny.item").unlink()
    with pytest.raises(DataError, match=r"tiny\.item is missing"):
        read_recbole(folder, "tiny")


def test_peers_script_trains_and_scores_the_projects_configs_on_the_split(tmp_path):
    """benchmarks/peers.py's project side (no RecBole needed): a config given with --configs trains on the
    exported split and gets its line, with sampled and full-ranking figures and its time to the best epoch;
    the data file is named relative to where the command runs."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    data = tmp_path / "tiny.csv"
    from tests.conftest import write_tiny

    write_tiny(data, n_users=30, n_items=50, per_user=12)
    run = subprocess.run([sys.executable, str(repo / "benchmarks" / "peers.py"), "--seeds", "1", "--no-pipeline",
                          "--configs", str(repo / "configs" / "gmf.yaml"), "--peers", "--out", str(tmp_path / "out"),
                          "--data.dataset", "tiny.csv", "--data.num_eval_negatives", "20", "--trainer.max_epochs", "1"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(repo)})
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    one = [r for r in lines if r.get("source") == "project" and r.get("model") == "gmf"]
    assert len(one) == 1 and one[0]["seed"] == 0, lines
    for key in ("test_hr10", "test_ndcg10", "test_full_hr10", "test_full_ndcg10", "seconds_to_best"):
        assert 0 <= one[0][key] and (key == "seconds_to_best" or one[0][key] <= 1), (key, one[0])


def test_peers_popularity_line_is_the_training_counts_ranked_by_hand():
    """benchmarks/peers.py's popularity floor: each candidate scored by its training interactions, ties
    against the held-out item, on the sampled candidates and in the full ranking (the user's items left out)."""
    import math
    import sys
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from peers import run_popularity

    from ncf.datasets import Interactions

    users, items = [], []
    rng = np.random.default_rng(3)
    for u in range(12):  # item 0 the most watched, then 1, ...: popularity with ties in the tail
        for i in sorted(rng.choice(40, size=8, replace=False, p=np.linspace(3, 1, 40) / np.linspace(3, 1, 40).sum())):
            users.append(u)
            items.append(int(i))
    inter = Interactions(np.array(users), np.array(items), np.arange(len(users)), list(range(12)), list(range(40)))
    split = leave_one_out(inter, num_eval_negatives=20, seed=0)
    counts = np.bincount(split.train_items.numpy(), minlength=40)

    def figures(rank):
        return np.mean([r < 10 for r in rank]), np.mean([1 / math.log2(r + 2) if r < 10 else 0 for r in rank])

    sampled_rank = [int((counts[c[1:]] >= counts[c[0]]).sum()) for c in split.test_candidates.numpy()]
    seen = {(int(u), int(i)) for u, i in zip(split.train_users, split.train_items)}
    seen |= {(int(u), int(c[0])) for u, c in zip(split.val_users, split.val_candidates)}
    full_rank = []
    for u, c in zip(split.test_users.numpy(), split.test_candidates.numpy()):
        others = [i for i in range(40) if i != c[0] and (int(u), i) not in seen]
        full_rank.append(sum(counts[i] >= counts[c[0]] for i in others))
    r = run_popularity(split)
    assert (r["test_hr10"], r["test_ndcg10"]) == pytest.approx(figures(sampled_rank), abs=1e-6)
    assert (r["test_full_hr10"], r["test_full_ndcg10"]) == pytest.approx(figures(full_rank), abs=1e-6)
    assert 0 < r["test_hr10"] < 1 and 0 < r["test_full_hr10"] < 1  # neither is trivially all or nothing here


def test_peers_table_refuses_runs_on_different_splits(tmp_path, capsys):
    """peers.py --table averages seeds of one split: pieces of another split are refused, and the popularity
    line (written by every piece) counts once."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from peers import table, table_rows

    def line(source, model, seed, sha, hr):
        return json.dumps({"source": source, "model": model, "seed": seed, "split_sha256": sha, "dataset": sha,
                           "best_epoch": 0, "test_hr10": hr, "test_ndcg10": hr / 2, "test_full_hr10": hr / 4,
                           "test_full_ndcg10": hr / 8, "seconds_to_best": 1.0})

    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    a.write_text(line("baseline", "popularity", None, "s1", 0.4) + "\n" + line("project", "gmf", 0, "s1", 0.6) + "\n")
    b.write_text(line("baseline", "popularity", None, "s1", 0.4) + "\n" + line("project", "gmf", 1, "s1", 0.7) + "\n")
    c.write_text(line("baseline", "popularity", None, "s2", 0.3) + "\n")
    rows = table_rows([a, b])
    assert [(r["model"], r["seed"]) for r in rows] == [("popularity", None), ("gmf", 0), ("gmf", 1)]
    lines = {line.split(" | ")[0]: line for line in table(rows).splitlines()}
    assert lines["| popularity"].endswith("| - |") and lines["| gmf"].endswith("| 0 0 |")  # nothing trained: no epoch
    with pytest.raises(SystemExit):
        table_rows([a, c])
    assert "two different splits" in capsys.readouterr().err


def test_peers_refuses_no_seeds(monkeypatch, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import peers

    monkeypatch.setattr(sys, "argv", ["peers.py", "--seeds", "0", "--peers"])
    with pytest.raises(SystemExit) as exit_:
        peers.main()
    assert exit_.value.code == 2 and "--seeds and --threads must be at least 1" in capsys.readouterr().err
