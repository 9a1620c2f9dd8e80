"""What explain.py and the callback say when there is nothing to explain, and what a history explanation
claims about its top interactions."""
import json
import logging

import pytorch_lightning as pl
import torch

from explain import AttributionCallback
from explain.cli import main as explain_main
from explain.history import HistoryInfluence
from explain.history_report import history_json, render_history
from ncf import NCFDataModule, NCFModule
from tests.conftest import write_tiny
from tests.helpers import module as make_module


def _blank(module: NCFModule) -> None:
    """Every user and every item gets the same embedding: the mean baseline itself."""
    with torch.no_grad():
        for emb in (module.net.user_embedding, module.net.item_embedding):
            emb.weight.fill_(0.25)
            emb.weight.requires_grad_(False)  # training moves nothing that could tell pairs apart


def _fit(tmp_path, module, dm, callbacks=()):
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, callbacks=list(callbacks),
                         default_root_dir=str(tmp_path))
    trainer.fit(module, dm)
    return trainer


def test_explain_warns_when_the_model_learned_nothing(tmp_path, capsys):
    data = write_tiny(tmp_path / "tiny.csv")
    dm = NCFDataModule(str(data), num_eval_negatives=5, batch_size=64)
    pl.seed_everything(0)
    trained = make_module("gmf", dm.num_users, dm.num_items, factor=4, lr=0.01)
    trainer = _fit(tmp_path, trained, dm)
    trainer.save_checkpoint(tmp_path / "trained.ckpt")
    _blank(trained)
    trainer.save_checkpoint(tmp_path / "blank.ckpt")
    args = ["--data", str(data), "--user", "u1", "--item", "m3", "--methods", "deeplift", "lime", "--n-samples", "64",
            "--no-faithfulness", "--quiet"]
    assert explain_main([str(tmp_path / "blank.ckpt"), *args, "--out", str(tmp_path / "blank")]) == 0
    err = capsys.readouterr().err
    # (the tiny file's held-out items are cold: the data's own warning is beside it)
    warned = [line for line in err.splitlines() if line.startswith("warning:") and str(data) not in line]
    assert len(warned) == 1 and "the model has not learned anything to explain" in warned[0]
    doc = json.loads((tmp_path / "blank" / "explanations.json").read_text())
    assert "learned anything" in doc["checkpoints"][0]["warnings"][0]
    # a trained model gets no such warning
    assert explain_main([str(tmp_path / "trained.ckpt"), *args, "--out", str(tmp_path / "trained")]) == 0
    assert not [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:") and str(data) not in ln]
    assert json.loads((tmp_path / "trained" / "explanations.json").read_text())["checkpoints"][0]["warnings"] == []


def test_callback_warns_once_when_the_model_learned_nothing(tmp_path, caplog):
    data = write_tiny(tmp_path / "tiny.csv")
    dm = NCFDataModule(str(data), num_eval_negatives=5, batch_size=64)
    pl.seed_everything(0)
    module = make_module("gmf", dm.num_users, dm.num_items, factor=4, lr=0.01)
    _blank(module)
    cb = AttributionCallback(methods=["deeplift"], num_probe_users=4, out_dir=str(tmp_path / "attr"), plots=False,
                             faithfulness=False)
    with caplog.at_level(logging.WARNING, logger="ncf"):
        trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, enable_checkpointing=False, callbacks=[cb])
        trainer.fit(module, dm)
    said = [r.message for r in caplog.records if "learned anything" in r.message]
    assert len(said) == 1 and said[0].startswith("epoch 0:")
    caplog.clear()
    pl.seed_everything(0)
    trained = make_module("gmf", dm.num_users, dm.num_items, factor=4, lr=0.01)
    cb = AttributionCallback(methods=["deeplift"], num_probe_users=4, out_dir=str(tmp_path / "attr2"), plots=False,
                             faithfulness=False)
    with caplog.at_level(logging.WARNING, logger="ncf"):
        _fit(tmp_path, trained, dm, [cb])
    assert not [r for r in caplog.records if "learned anything" in r.message]


def _history(influence):
    return HistoryInfluence(0, 9, torch.arange(len(influence)), [0, 1], torch.tensor([influence, [0.0] * len(influence)]))


def test_history_share_is_claimed_only_for_the_proponents():
    # five interactions, one of which lowered the score: "these 5 hold 100%" would be false
    h = _history([0.4, 0.3, -0.2, 0.2, 0.1])
    text = render_history(h, list(range(10)), None, 5)
    head = text.splitlines()[0]
    assert "these 5 hold" not in head
    assert "of these 5, the 4 that raised the score hold 100% of the positive influence of 5 interactions; " \
           "1 lowered it" in head
    doc = history_json(h, list(range(10)), None, 5)
    assert doc["top_k_proponents"] == 4 and doc["top_k_opponents"] == 1 and doc["top_k_share"] == 1.0
    # all proponents: the plain sentence, with the share they hold
    assert "these 2 hold 70% of the positive influence of 5 interactions" in render_history(h, list(range(10)), None, 2)
    # nothing raised the score: no "because", the interactions are listed as lowering it, the strongest first
    text = render_history(_history([-0.1, -0.3]), [0, 1], None, 5)
    assert "none of the 2 interactions raised the score" in text and "because" not in text
    assert [ln.split()[0] for ln in text.splitlines()[1:]] == ["lowered", "1.", "2."] and "-0.3" in text.splitlines()[2]
    # the raisers under "because", the lowering one apart, zeros counted, the pair's own item (9) marked
    h = HistoryInfluence(0, 3, torch.arange(5), [0], torch.tensor([[0.4, 0.0, -0.2, 0.3, 0.0]]))
    lines = render_history(h, list(range(10)), None, 5).splitlines()
    assert lines[0].startswith("  recommended because you rated") and "(item 0)" in lines[1] and "(item 3)" in lines[2]
    assert "this item" in lines[2] and lines[3] == "  lowered it:" and "(item 2)" in lines[4]
    assert lines[5] == "  2 of the 5 most influential interactions had no influence on it (0); not listed."
