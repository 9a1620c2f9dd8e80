"""The evolution analysis (explain/evolution.py), the HTML report and ``explain.py report``: hand-made records
whose answers are known, a rotated model, partial and foreign folders, and a real browser."""
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from explain import evolution as ev
from explain import record
from explain.record import Record
from explain.cli import main as explain_main
from explain.core import attribute
from explain.html_report import COMPARE_PANELS, PIPELINE_PANELS, RUN_PANELS, write_report
from ncf.models import MLP

MANIFEST = {"format": "ncf-explain attribution record, version 1", "methods": ["deeplift"], "max_epochs": 4,
            "model": {"model": "gmf"}, "probe": []}


def _write(folder: Path, dims_by_epoch: dict, totals_by_epoch: dict, val=None, finished=True, history=None,
           model="gmf") -> Path:
    """A record by hand: ``dims_by_epoch[e]`` is ``[pairs, D]`` DeepLift per dimension (one embedding ``user``),
    ``totals_by_epoch[e]`` ``[pairs, 2]`` per-embedding totals (user, item)."""
    folder.mkdir(parents=True, exist_ok=True)
    record.write_manifest(folder, {**MANIFEST, "model": {"model": model}, "finished": finished})
    for e, d in dims_by_epoch.items():
        d = np.asarray(d, dtype=float)
        n, width = d.shape
        dims = pd.DataFrame({"epoch": e, "method": "deeplift", "pair": np.repeat(np.arange(n), width),
                             "user_id": np.repeat(np.arange(n), width), "item_id": 0, "kind": "validation_positive",
                             "embedding": "user", "dim": np.tile(np.arange(width), n), "attribution": d.ravel(),
                             "at_baseline": False})
        t = np.asarray(totals_by_epoch[e], dtype=float)
        pairs = pd.DataFrame({"epoch": e, "method": "deeplift", "pair": np.arange(n), "user_id": np.arange(n),
                              "item_id": 0, "kind": ["listed"] + ["validation_positive"] * (n - 1),
                              "total_user": t[:, 0], "total_item": t[:, 1],
                              "share_user": np.abs(t[:, 0]) / np.abs(t).sum(1), "score": 0.5,
                              "val_ndcg10": np.nan if val is None or e < 0 else val[e]})
        extra = {"history": history[history["epoch"] == e]} if history is not None and e in set(history["epoch"]) else {}
        record.write_epoch(folder, e, dims, pairs, extra)
    return folder


def test_settle_epoch_best_epoch_and_randomisation_on_a_known_record(tmp_path):
    rng = np.random.default_rng(0)
    final = rng.normal(size=(6, 8))
    # epoch -1: reversed ranks of the final explanation; epoch 0: random; epochs 1-3: the final one (scaled).
    dims = {-1: -final, 0: rng.normal(size=(6, 8)), 1: 2 * final, 2: final, 3: final}
    tot_final = np.abs(rng.normal(size=(6, 2))) + 0.1
    totals = {-1: -tot_final, 0: tot_final * [1, -1], 1: tot_final * [1, 0.9], 2: tot_final, 3: tot_final}
    r = Record.read(_write(tmp_path / "rec", dims, totals, val={0: 0.1, 1: 0.3, 2: 0.2, 3: 0.25}))
    sim = ev.similarity_to_final(r)
    assert ev.settle_epoch(sim, "dims_spearman") == 1
    assert ev.settle_epoch(sim, "totals_cosine") == 1
    assert ev.best_val_epoch(r.pairs) == 1
    check = ev.randomisation_check(sim)
    assert check["dims_spearman"] == pytest.approx(-1.0) and check["totals_cosine"] == pytest.approx(-1.0)
    assert sim[sim["epoch"] == 3]["dims_spearman"].eq(1.0).all()
    table = ev.write_evolution(r.folder)
    assert list(table["epoch"]) == [-1, 0, 1, 2, 3] and table.loc[table["epoch"] == 1, "val_ndcg10"].item() == 0.3
    assert (r.folder / "evolution.csv").exists() and (r.folder / "evolution_pairs.parquet").exists()


def test_settle_epoch_waits_for_the_last_dip():
    sim = pd.DataFrame({"epoch": [-1, 0, 1, 2, 3, 4], "pair": 0, "totals_cosine": [0.0, 0.95, 0.5, 0.91, 0.99, 1.0]})
    assert ev.settle_epoch(sim) == 2
    assert ev.settle_epoch(sim, threshold=0.99) == 3


def test_flips_count_top_k_changes(tmp_path):
    base = np.array([[5., 4., 3., 2., 1., 0.]] * 2)
    swapped = base.copy()
    swapped[1] = [0., 4., 3., 2., 1., 5.]  # pair 1: dimension 0 leaves the top 2, dimension 5 enters
    dims = {0: base, 1: base * 3, 2: swapped, 3: swapped}
    totals = {e: np.ones((2, 2)) for e in dims}
    fl = ev.flips(Record.read(_write(tmp_path / "rec", dims, totals)), k=2)
    got = {(e, p): f for e, p, f in fl[["epoch", "pair", "flip_dims"]].itertuples(index=False)}
    assert got == {(1, 0): False, (1, 1): False, (2, 0): False, (2, 1): True, (3, 0): False, (3, 1): False}


def test_history_flips_and_similarity(tmp_path):
    rows = []
    for e, order in ((0, [3., 2., 1.]), (1, [1., 2., 3.]), (2, [1., 2., 3.])):
        rows += [{"epoch": e, "pair": 0, "history_item_id": i, "running_total": v, "contribution": v}
                 for i, v in zip(("a", "b", "c"), order)]
    hist = pd.DataFrame(rows)
    dims = {e: np.eye(3)[:1] for e in (0, 1, 2)}
    r = Record.read(_write(tmp_path / "rec", dims, {e: np.ones((1, 2)) for e in dims}, history=hist))
    fl = ev.flips(r, k=1)
    assert fl.set_index("epoch")["flip_history"].to_dict() == {1: True, 2: False}
    sim = ev.similarity_to_final(r)
    assert sim.set_index("epoch")["history_spearman"].to_dict() == pytest.approx({0: -1.0, 1: 1.0, 2: 1.0})


def test_history_chart_shows_what_raises_the_score_first(tmp_path):
    """Items that lower the score by more than any item raises it must not crowd the raisers out of the chart
    that sits beside the sentence naming the raisers; every line says which way it pushes."""
    finals = {"up1": 0.004, "up2": 0.002, "down1": -0.009, "down2": -0.008, "down3": -0.007, "down4": -0.006}
    hist = pd.DataFrame([{"epoch": e, "pair": 0, "history_item_id": i, "history_item_name": f"Film {i}",
                          "running_total": v * (e + 1) / 2, "contribution": v / 2}
                         for e in (0, 1) for i, v in finals.items()])
    dims = {e: np.eye(3)[:1] for e in (0, 1)}
    rec = _write(tmp_path / "rec", dims, {e: np.ones((1, 2)) for e in dims}, history=hist)
    page = write_report([rec], tmp_path / "r.html").read_text()
    shown = [x for x in ("raises: Film up1", "raises: Film up2", "lowers: Film down1", "lowers: Film down2",
                         "lowers: Film down3", "lowers: Film down4") if x in page]
    assert shown == ["raises: Film up1", "raises: Film up2", "lowers: Film down1", "lowers: Film down2",
                     "lowers: Film down3"]
    assert 'the items that raise it most, by epoch 0: "Film up1" and "Film up2"; epoch 1:' in page.replace("&quot;", '"')
    # a listed pair of an item the user rated in training: its own item is among the raisers, marked as such
    rec = _write(tmp_path / "own", dims, {e: np.ones((1, 2)) for e in dims}, history=hist.assign(item_id="up1"))
    page = write_report([rec], tmp_path / "own.html").read_text().replace("&quot;", '"').replace("&#x27;", "'")
    assert "raises: Film up1 (the pair's own item)" in page and "raises: Film up2 (the pair's" not in page
    assert 'by epoch 0: "Film up1" (the pair\'s own item) and "Film up2"' in page
    # a long title is shortened at a word, keeping its year, not cut inside it
    long = "Mrs. Brown (Her Majesty, Mrs. Brown) (1997)"
    rec = _write(tmp_path / "long", dims, {e: np.ones((1, 2)) for e in dims},
                 history=hist.assign(history_item_name=hist["history_item_name"].replace("Film up1", long * 2)))
    page = write_report([rec], tmp_path / "long.html").read_text()
    assert "raises: Mrs. Brown (Her Majesty, Mrs. Brown) (1997)…(1997)" not in page
    assert "raises: Mrs. Brown (Her Majesty, Mrs. Brown)…" in page and "(1997)</text>" in page


def test_bands_are_quartiles():
    b = ev.bands(pd.DataFrame({"epoch": [0] * 5 + [1] * 5, "x": [0., 1., 2., 3., 4.] * 2}), "x")
    assert b.loc[0, ["q25", "median", "q75"]].tolist() == [1.0, 2.0, 3.0]


def _random_orthogonal(n, gen):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q.float()


def test_basis_free_measure_is_unchanged_by_a_rotation_that_keeps_the_scores():
    """Rotate the MLP's user and item embeddings by orthogonal maps and counter-rotate its first layer: the
    scores stay, per-dimension DeepLift changes, the per-embedding totals (and so the basis-free similarity)
    do not."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = MLP(12, 15, factor=4, num_layers=2).eval()
    rot = MLP(12, 15, factor=4, num_layers=2).eval()
    rot.load_state_dict(net.state_dict())
    d = net.embedding
    ru, ri = _random_orthogonal(d, gen), _random_orthogonal(d, gen)
    first = next(m for m in rot.tower.modules() if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        rot.user_embedding.weight.copy_(net.user_embedding.weight @ ru.T)
        rot.item_embedding.weight.copy_(net.item_embedding.weight @ ri.T)
        w = first.weight.clone()
        first.weight[:, :d] = w[:, :d] @ ru.T
        first.weight[:, d:] = w[:, d:] @ ri.T
    users, items = torch.arange(12), torch.arange(12)
    torch.testing.assert_close(rot(users, items), net(users, items), atol=1e-5, rtol=1e-5)
    a, b = attribute(net, users, items, "deeplift"), attribute(rot, users, items, "deeplift")
    torch.testing.assert_close(b.embedding_totals, a.embedding_totals, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(b.features, a.features, atol=1e-2)
    # As two epochs of one record: the basis-free similarity is 1, the per-dimension one is not.
    meta = pd.DataFrame({"pair": range(12), "user_id": range(12), "item_id": range(12), "kind": "validation_positive"})
    from explain.tables import dims_frame, pairs_frame

    frames = {0: (a, 0), 1: (b, 1)}
    dims = pd.concat([dims_frame({"deeplift": x}, meta, e) for x, e in frames.values()], ignore_index=True)
    pairs = pd.concat([pairs_frame({"deeplift": x}, meta, e) for x, e in frames.values()], ignore_index=True)
    sim = ev.similarity_to_final(Record(Path("."), {"methods": ["deeplift"]}, pairs, dims))
    first_epoch = sim[sim["epoch"] == 0]
    assert first_epoch["totals_cosine"].min() > 1 - 1e-5
    assert first_epoch["dims_spearman"].median() < 0.9


class _Panels(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.figures, self.external = [], 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.ids.append(a.get("id"))
        if tag == "svg":
            self.figures += 1
        if tag in ("script", "link", "img", "iframe", "image", "use") or any(k in ("src", "href") and not str(v).startswith("#")
                                                                          for k, v in attrs):
            self.external.append((tag, attrs))


def _known_record(folder: Path, model="gmf", finished=True) -> Path:
    rng = np.random.default_rng(1)
    dims = {e: rng.normal(size=(4, 6)) for e in range(-1, 3)}
    totals = {e: rng.normal(size=(4, 2)) for e in dims}
    return _write(folder, dims, totals, val={0: .1, 1: .2, 2: .15}, finished=finished, model=model)


def _with(folder: Path, **manifest) -> Path:
    """The record at ``folder`` with manifest entries set (``model`` entries merged)."""
    m = json.loads((folder / "manifest.json").read_text())
    m["model"].update(manifest.pop("model", {}))
    record.write_manifest(folder, {**m, **manifest})
    return folder


def _pretrained_pipeline(root: Path, gmf_id="g1", mlp_id="m1") -> tuple[Path, Path, Path]:
    """GMF and MLP records, and a NeuMF record that started from runs ``gmf_id`` and ``mlp_id``, as the callback
    writes them (run ids in ``run``, the sources in ``pretrained_from``)."""
    gmf = _with(_known_record(root / "gmf" / "attributions"), run={"id": "g1"})
    mlp = _with(_known_record(root / "mlp" / "attributions", model="mlp"), run={"id": "m1"})
    pre = _with(_known_record(root / "neumf_pretrained" / "attributions", model="neumf"), run={"id": "n1"},
                model={"pretrained_gmf": "runs/gmf/checkpoints/best.ckpt", "pretrained_mlp": "runs/mlp/checkpoints/best.ckpt"},
                pretrained_from={"gmf": {"run_id": gmf_id, "path": "runs/gmf/checkpoints/best.ckpt", "epoch": 1},
                                 "mlp": {"run_id": mlp_id, "path": "runs/mlp/checkpoints/best.ckpt", "epoch": 2}})
    return gmf, mlp, pre


def test_report_holds_every_panel_and_nothing_external(tmp_path):
    gmf, mlp, pre = _pretrained_pipeline(tmp_path / "runs")
    out = write_report([pre, mlp, gmf], tmp_path / "report.html")
    page = out.read_text()
    p = _Panels()
    p.feed(page)
    for k in range(3):
        assert [f"run-{k}-panel-{x}" for x in RUN_PANELS] == [i for i in p.ids if i.startswith(f"run-{k}-")]
    assert [f"pipeline-{x}" for x in PIPELINE_PANELS] == [i for i in p.ids if i.startswith("pipeline-")]
    assert not [i for i in p.ids if i.startswith("compare-")]  # every run is a stage: nothing else to compare
    assert p.figures >= 10 and not p.external  # figures inline, nothing loaded from elsewhere
    assert "Attribution evolution: GMF -&gt; MLP -&gt; NeuMF pretrained<" in page  # stages in training order
    assert page.index("GMF:") < page.index("MLP:") < page.index("NeuMF pretrained:")


def test_pipeline_stages_are_the_runs_the_pretrained_model_started_from(tmp_path):
    from explain.html_report import pipeline_stages

    gmf, mlp, pre = _pretrained_pipeline(tmp_path / "runs")
    scratch = Record.read(_known_record(tmp_path / "runs" / "neumf" / "attributions", model="neumf"))
    recs = [Record.read(f) for f in (gmf, mlp, pre)]
    stages = pipeline_stages([scratch, *recs])
    assert [r.stage_name for r in stages] == ["GMF", "MLP", "NeuMF pretrained"]  # the scratch NeuMF is no stage
    assert pipeline_stages([scratch, *recs[:2]]) == []  # no pretrained model: runs trained apart, no pipeline
    assert pipeline_stages(recs[:2]) == []  # GMF and MLP alone are two runs, not a pipeline yet
    again = Record.read(_with(_known_record(tmp_path / "runs2" / "gmf" / "attributions"), run={"id": "g2"}))
    assert [r.run_id for r in pipeline_stages([again, *recs])] == ["g1", "m1", "n1"]  # by run id, not by model
    # a record written before the callback kept the source runs: the checkpoint's run folder, else the model
    old = Record.read(_with(_known_record(tmp_path / "old" / "attributions", model="neumf"),
                            model={"pretrained_gmf": "x/runs/gmf/checkpoints/best.ckpt", "pretrained_mlp": "m.ckpt"}))
    assert [r.stage_name for r in pipeline_stages([old, *recs[:2], again])] == ["GMF", "MLP", "NeuMF pretrained"]
    assert pipeline_stages([old, *recs[:2], again])[0].run_id == "g1"  # runs/gmf, not runs2/gmf


def test_two_pretrained_runs_of_the_same_sources_are_compared_not_chained(tmp_path):
    from explain.html_report import pipeline_stages

    gmf, mlp, pre = _pretrained_pipeline(tmp_path / "runs")
    twin = _known_record(tmp_path / "runs" / "neuref" / "attributions", model="neumf")
    twin = _with(twin, run={"id": "n2"}, model=json.loads((pre / "manifest.json").read_text())["model"],
                 pretrained_from=json.loads((pre / "manifest.json").read_text())["pretrained_from"])
    recs = [Record.read(f) for f in (gmf, mlp, pre, twin)]
    assert [r.run_id for r in pipeline_stages(recs)] == ["g1", "m1", "n1"]  # one chain; the twin is beside it
    page = write_report([gmf, mlp, pre, twin], tmp_path / "report.html").read_text()
    assert "Runs compared" in page and "-&gt; NeuMF pretrained (neumf_pretrained); NeuMF pretrained (neuref)" \
        in page
    assert "is another pretrained run: the page draws one pipeline" in page
    # one started from another GMF: no banner says the drawn GMF is not a stage
    other = _with(twin, pretrained_from={"gmf": {"run_id": "g9", "path": "x/runs/gmf/checkpoints/best.ckpt", "epoch": 1},
                                         "mlp": {"run_id": "m1", "path": "runs/mlp/checkpoints/best.ckpt", "epoch": 2}})
    page = write_report([gmf, mlp, pre, other], tmp_path / "report2.html").read_text()
    assert "is not the GMF run that" not in page and "is another pretrained run" in page


def test_report_marks_a_gmf_retrained_after_the_pipeline_and_compares_it(tmp_path):
    """GMF retrained after the NeuMF was pretrained from the earlier GMF: the new GMF is no stage, the page
    says so, and a pretrained model whose sources are all missing gets the comparison."""
    gmf, mlp, pre = _pretrained_pipeline(tmp_path / "runs", gmf_id="g0")
    page = write_report([gmf, mlp, pre], tmp_path / "report.html").read_text()
    p = _Panels()
    p.feed(page)
    assert "is not the GMF run that NeuMF pretrained" in page and "(run g0)" in page
    assert "Attribution evolution: MLP -&gt; NeuMF pretrained; GMF<" in page
    assert [f"pipeline-{x}" for x in PIPELINE_PANELS] == [i for i in p.ids if i.startswith("pipeline-")]
    assert [f"compare-{x}" for x in COMPARE_PANELS] == [i for i in p.ids if i.startswith("compare-")]
    earlier = _with(_known_record(tmp_path / "runs" / "gmf" / "superseded" / "g0" / "attributions"), run={"id": "g0"})
    page = write_report([gmf, mlp, pre, earlier], tmp_path / "again.html").read_text()
    assert "Attribution evolution: GMF (g0) -&gt; MLP -&gt; NeuMF pretrained; GMF (gmf)<" in page
    assert "is not the GMF run" not in page  # the advice followed: the pipeline is drawn, nothing to say
    other = _with(_known_record(tmp_path / "mf" / "attributions", model="mf"), run={"id": "f1"})
    page = write_report([other, pre], tmp_path / "alone.html").read_text()
    assert "which is not among these records" in page and "compare-runs" in page and "pipeline-stages" not in page


def test_report_says_when_compared_runs_were_evaluated_on_other_splits(tmp_path):
    a = _with(_known_record(tmp_path / "a" / "gmf" / "attributions"), data={"split_seed": 0, "split_fingerprint": "f0"})
    b = _with(_known_record(tmp_path / "b" / "gmf" / "attributions"), data={"split_seed": 1, "split_fingerprint": "f1"})
    page = write_report([a, b], tmp_path / "r.html").read_text()
    assert "evaluated on 2 different splits" in page and "split_seed=0" in page and "split_seed=1" in page
    c = _with(_known_record(tmp_path / "c" / "gmf" / "attributions"), data={"split_seed": 0, "split_fingerprint": "f0"})
    assert "different splits" not in write_report([a, c], tmp_path / "same.html").read_text()
    assert "data.split_seed" in page  # the settings table shows the data settings
    assert "GMF (a/gmf)" in page and "GMF (b/gmf)" in page  # run folders of one name, told apart
    more = [_with(_known_record(tmp_path / f"m{k}" / "gmf" / "attributions"),
                  data={"split_seed": 0, "split_fingerprint": "f0"}) for k in range(4)]
    page = write_report([a, b, *more], tmp_path / "many.html").read_text()  # each split once, its runs after it
    assert "split_seed=0: GMF (a/gmf), GMF (m0/gmf), GMF (m1/gmf) and 2 more; split_seed=1: GMF (b/gmf)" in page


def test_report_compares_runs_that_are_no_pipeline_on_one_epoch_axis(tmp_path):
    """GMF beside a NeuMF from scratch were trained apart: the report compares them over the same epochs
    instead of drawing them one after another as stages."""
    gmf = _known_record(tmp_path / "runs" / "gmf" / "attributions")
    neumf = _known_record(tmp_path / "runs" / "neumf" / "attributions", model="neumf")
    page = write_report([neumf, gmf], tmp_path / "report.html").read_text()
    p = _Panels()
    p.feed(page)
    assert [f"compare-{x}" for x in COMPARE_PANELS] == [i for i in p.ids if i.startswith("compare-")]
    assert not [i for i in p.ids if i.startswith("pipeline-")]
    assert "Attribution evolution: GMF, NeuMF" in page and "stage after stage" not in page
    assert "epoch (-1: before training)" in page


def test_report_command_partial_foreign_and_missing(tmp_path, capsys):
    rec = _known_record(tmp_path / "run" / "attributions", finished=False)
    before = {f.name: f.read_bytes() for f in rec.iterdir()}
    assert explain_main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "elsewhere.html")]) == 0
    # only read: a run still training writes its own record, and the report is the one file written
    assert {f.name: f.read_bytes() for f in rec.iterdir()} == before and (tmp_path / "elsewhere.html").is_file()
    assert explain_main(["report", str(tmp_path / "run")]) == 0
    assert sorted(f.name for f in rec.iterdir()) == sorted([*before, "report.html"])
    page = (rec / "report.html").read_text()
    assert "Partial record" in page
    assert "1 partial" in capsys.readouterr().out
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    assert explain_main(["report", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not an attribution record and holds none" in err[0]
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "manifest.json").write_text(json.dumps({"format": "something else"}))
    assert explain_main(["report", str(tmp_path / "fake")]) == 2
    assert explain_main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no such folder" in capsys.readouterr().err
    data = tmp_path / "data.csv"  # a data file given as --out by mistake is not written over
    data.write_text("user,item\n1,2\n")
    assert explain_main(["report", str(tmp_path / "run"), "--out", str(data)]) == 2
    assert "give a file ending in .html" in capsys.readouterr().err and data.read_text() == "user,item\n1,2\n"


def test_report_says_when_a_finished_records_epoch_files_are_gone(tmp_path, capsys):
    """A finished record lists its epochs; one whose files were deleted would change the report's conclusions
    without a word."""
    rec = _with(_known_record(tmp_path / "run" / "attributions"), epochs_recorded=[-1, 0, 1, 2])
    assert explain_main(["report", str(tmp_path / "run")]) == 0
    assert "warning" not in capsys.readouterr().err and "lacks the files" not in (rec / "report.html").read_text()
    (rec / "pairs_epoch=0.parquet").unlink()
    assert explain_main(["report", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert f"warning: {rec} lacks the files of epoch 0 (its manifest lists them as recorded)" in err
    assert "lacks the files of epoch 0, which its run recorded" in (rec / "report.html").read_text()


def test_report_refuses_records_of_two_datasets_naming_which_is_which(tmp_path, capsys):
    a = _with(_known_record(tmp_path / "a" / "gmf" / "attributions"), dataset="ml-100k")
    b = _with(_known_record(tmp_path / "b" / "gmf" / "attributions"), dataset="synthetic:50000")
    assert explain_main(["report", str(tmp_path / "a" / "gmf"), str(tmp_path / "b" / "gmf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "of 2 datasets" in err[0], err
    assert f"ml-100k: {a}" in err[0] and f"synthetic-50000: {b}" in err[0] and err[0].endswith(f"report {a}.")
    # several records of the first dataset: the folder that holds them (and no other dataset's) is suggested
    _with(_known_record(tmp_path / "a" / "mlp" / "attributions", model="mlp"), dataset="ml-100k")
    assert explain_main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"e.g. explain.py report {(tmp_path / 'a').resolve()}."), err


def test_report_of_a_record_with_no_epoch_yet(tmp_path):
    folder = tmp_path / "attributions"
    folder.mkdir()
    record.write_manifest(folder, {**MANIFEST, "finished": False})
    page = write_report([folder], tmp_path / "r.html").read_text()
    assert "Partial record" in page and "none" in page


def test_report_renders_in_headless_chromium(tmp_path):
    from explain.browser import blank, chromium, render

    if chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing in CI: .ci/run installs Debian's chromium package")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    gmf = _known_record(tmp_path / "gmf" / "attributions")
    out = write_report([gmf], tmp_path / "report.html")
    console = render(out, tmp_path / "shot.png", 1000, 1600)
    assert console == []
    assert not blank(tmp_path / "shot.png")


def test_no_settle_or_randomisation_from_the_final_epoch_alone():
    """The final epoch is similar to itself by construction: it settles nothing, and a record holding only
    epoch -1 has no randomisation check."""
    import pandas as pd

    from explain import evolution as ev

    sim = pd.DataFrame({"epoch": [-1, 0, 1, 2], "pair": 0, "totals_cosine": [0.1, 0.5, 0.8, 1.0]})
    assert ev.settle_epoch(sim) is None
    only_start = pd.DataFrame({"epoch": [-1, -1], "pair": [0, 1], "totals_cosine": [1.0, 1.0]})
    assert ev.randomisation_check(only_start) == {}


def test_report_refuses_a_damaged_record_in_one_line(tmp_path, capsys):
    """A truncated epoch file, or a manifest that is not JSON: one line naming the file, exit code 2."""
    import json

    import pandas as pd

    from explain.cli import main as explain_main

    rec = tmp_path / "run" / "attributions"
    rec.mkdir(parents=True)
    (rec / "manifest.json").write_text("{\"format\": ")
    assert explain_main(["report", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a readable ncf-explain manifest" in err[0]
    from explain.record import FORMAT

    (rec / "manifest.json").write_text(json.dumps({"format": FORMAT, "finished": True}))
    pd.DataFrame({"epoch": [0], "method": ["deeplift"], "pair": [0]}).to_parquet(rec / "pairs_epoch=0.parquet")
    (rec / "dims_epoch=0.parquet").write_bytes(b"PAR1 truncated")
    assert explain_main(["report", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be read" in err[0]
    # an epoch file with no rows and no columns (not the callback's): named, not a KeyError
    pd.DataFrame().to_parquet(rec / "pairs_epoch=0.parquet")
    pd.DataFrame().to_parquet(rec / "dims_epoch=0.parquet")
    assert explain_main(["report", str(tmp_path / "run")]) == 2
    assert "lack the columns ['epoch', 'method', 'pair']" in capsys.readouterr().err
    # found inside a folder beside a sound record: left out with a warning, the other record is reported
    _known_record(tmp_path / "good" / "attributions")
    assert explain_main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 0
    said = capsys.readouterr()
    assert f"warning: left out {rec}: a file of the record cannot be read" in said.err and (tmp_path / "r.html").is_file()
    assert "from 1 record, 1 left out (damaged)" in said.out  # the records drawn, not those found


def _with_second_method(folder: Path, shift: float) -> Record:
    """The record with an ``ig`` beside its ``deeplift`` (its attributions plus ``shift`` on dimension 0) and
    the two's agreement."""
    for f in sorted(folder.glob("dims_epoch=*.parquet")):
        e = int(f.stem.split("=")[1])
        dims, pairs = pd.read_parquet(f), pd.read_parquet(folder / f"pairs_epoch={e}.parquet")
        ig = dims.assign(method="ig", attribution=dims["attribution"] + shift * (dims["dim"] == 0))
        agree = 1.0 if shift == 0 else 0.5
        pairs = pd.concat([pairs.assign(agreement_ig=agree), pairs.assign(method="ig", agreement_deeplift=agree)])
        record.write_epoch(folder, e, pd.concat([dims, ig]), pairs, {})
    record.write_manifest(folder, {**json.loads((folder / "manifest.json").read_text()), "methods": ["deeplift", "ig"]})
    return Record.read(folder)


def test_agreement_of_two_methods_that_compute_the_same_is_not_charted_as_a_measurement(tmp_path):
    """On GMF, DeepLift and IG give the same attributions: an agreement of 1 at every epoch is by construction."""
    d = {e: np.random.default_rng(e + 1).normal(size=(4, 6)) for e in (-1, 0, 1)}
    t = {e: np.abs(d[e][:, :2]) + 0.1 for e in d}
    same = _with_second_method(_write(tmp_path / "same", d, t, val={0: 0.2, 1: 0.3}), 0.0)
    other = _with_second_method(_write(tmp_path / "other", d, t, val={0: 0.2, 1: 0.3}), 0.7)
    assert ev.coincide(same, "deeplift", "ig") and not ev.coincide(other, "deeplift", "ig")
    page = write_report([same], tmp_path / "same.html").read_text()
    assert "deeplift and ig gave the same attributions (to float rounding) for every pair at every epoch" in page
    assert "<title>agreement: deeplift vs ig</title>" not in page
    page = write_report([other], tmp_path / "other.html").read_text()
    assert "<title>agreement: deeplift vs ig</title>" in page and "gave the same attributions" not in page


def test_totals_that_point_one_way_by_construction_are_not_read_as_measurements(tmp_path):
    """GMF with a zero baseline gives the user and the item half of every product: equal totals for every pair
    at every epoch, so shares and the totals' cosine (only -1 or 1) are not measurements."""
    rng = np.random.default_rng(0)
    d = {e: rng.normal(size=(4, 6)) for e in (-1, 0, 1, 2)}
    half = {e: np.repeat(rng.normal(size=(4, 1)), 2, axis=1) for e in d}  # (a, a) per pair
    fixed = Record.read(_write(tmp_path / "fixed", d, half, val={0: 0.2, 1: 0.3, 2: 0.3}))
    free = Record.read(_write(tmp_path / "free", d, {e: rng.normal(size=(4, 2)) for e in d}, val={0: 0.2, 1: 0.3, 2: 0.3}))
    assert ev.fixed_totals(fixed) and not ev.fixed_totals(free)
    page = write_report([fixed], tmp_path / "fixed.html").read_text().replace("&#x27;", "'")
    assert "point the same way at every epoch: on this model and baseline they are fixed by construction" in page
    assert ev.MEASURES["totals_cosine"] not in page.split('id="run-0-panel-summary"')[1].split("</table>")[0]
    page = write_report([free], tmp_path / "free.html").read_text()
    assert "fixed by construction" not in page


def test_a_record_that_starts_after_training_began_is_not_read_as_from_the_start(tmp_path):
    """A callback added when a run resumed records from there: its first epoch is no untrained start, so a
    settle epoch there may be earlier and its movement is not ranked against runs recorded from epoch -1."""
    rng = np.random.default_rng(2)
    final, totals = rng.normal(size=(4, 6)), np.abs(rng.normal(size=(4, 2))) + 0.1
    late = _write(tmp_path / "late" / "attributions", {e: final for e in (2, 3, 4)}, {e: totals for e in (2, 3, 4)},
                  val={2: .1, 3: .2, 4: .15})
    full = _known_record(tmp_path / "full" / "attributions")
    page = write_report([late, full], tmp_path / "report.html").read_text()
    assert "(from epoch 2)" in page and "joined when the run resumed" in page
    assert "2 or earlier (the record starts there)" in page and "settle by epoch 2, the first recorded," in page


def test_the_settings_table_leaves_out_sample_bounds_a_fixed_count_replaced(tmp_path):
    from explain.methods import settings_for

    def row(settings):
        rec = _with(_known_record(tmp_path / "rec"), settings={"lime": settings})
        page = write_report([rec], tmp_path / "r.html").read_text().replace("&#x27;", "'")
        return page[page.index("method settings"):page.index("baseline")]

    fixed = row(settings_for("lime", 512))
    assert "'n_samples': 512" in fixed and "min_samples" not in fixed and "max_samples" not in fixed
    assert "'min_samples': 16384" in row(settings_for("lime"))  # the convergence rule's bounds, when it ran


def test_the_history_panel_says_how_many_highlighted_pairs_it_draws(tmp_path):
    rng = np.random.default_rng(3)
    dims = {e: rng.normal(size=(6, 4)) for e in (0, 1, 2)}
    hist = pd.DataFrame([{"epoch": e, "pair": p, "history_item_id": i, "history_item_name": f"Film {i}",
                          "running_total": float(rng.normal()), "contribution": 0.1}
                         for e in (0, 1, 2) for p in range(6) for i in ("a", "b")])
    rec = _write(tmp_path / "rec", dims, {e: np.abs(rng.normal(size=(6, 2))) for e in dims}, history=hist)
    page = write_report([rec], tmp_path / "r.html").read_text().replace("&#x27;", "'")
    assert "History drawn for the first 4 of the 5 pairs highlighted above (listed pairs first)" in page
