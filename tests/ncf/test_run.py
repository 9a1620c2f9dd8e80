"""Run identity and checkpoint integrity: what a resume, a pretraining and history influence accept."""
import os
import shutil
import stat

import pytest
import pytorch_lightning as pl
import torch

from ncf import NCFDataModule, NCFModule
from ncf.checkpoint import DIGEST_KEY, STATE_KEY, load_network, state_digest
from ncf.errors import CheckpointError, ConfigError
from ncf.run import trainer_settings
from tests.conftest import write_tiny
from tests.helpers import module as make_module


def _data(tmp_path):
    path = tmp_path / "tiny.csv"
    return path if path.exists() else write_tiny(path, n_users=20, n_items=40, per_user=10)


def _dm(tmp_path, **kw):
    return NCFDataModule(str(_data(tmp_path)), batch_size=64, num_eval_negatives=20, **kw)


def _trainer(folder, epochs, **kw):
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=str(folder), filename="{epoch}", save_top_k=-1)
    return pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[ckpt], **kw)


def _fit(tmp_path, name, model="gmf", epochs=1, lr=0.01, dm_kw=None, **trainer_kw):
    pl.seed_everything(0)
    dm = _dm(tmp_path, **(dm_kw or {}))
    module = make_module(model, dm.num_users, dm.num_items, factor=4, num_layers=2, lr=lr)
    _trainer(tmp_path / name, epochs, **trainer_kw).fit(module, dm)
    return module, tmp_path / name


def _resume(tmp_path, path, epochs=2, **trainer_kw):
    dm = _dm(tmp_path)
    module = make_module("gmf", dm.num_users, dm.num_items, factor=4, num_layers=2, lr=0.01)
    _trainer(tmp_path / "resumed", epochs, **trainer_kw).fit(module, dm, ckpt_path=str(path))
    return module


def test_trainer_settings_that_change_the_weights_are_part_of_the_identity(tmp_path):
    assert trainer_settings(pl.Trainer(accelerator="cpu", logger=False, max_epochs=7)) == {}  # defaults: as before
    _, folder = _fit(tmp_path, "a")
    last = folder / "epoch=0.ckpt"
    changed = [({"gradient_clip_val": 0.5}, "trainer.gradient_clip_val None there, 0.5 now"),
               ({"accumulate_grad_batches": 2}, "trainer.accumulate_grad_batches 1 there, 2 now"),
               ({"precision": "bf16-mixed"}, "trainer.precision '32-true' there, 'bf16-mixed' now"),
               ({"limit_train_batches": 1}, "trainer.limit_train_batches 1.0 there, 1 now")]
    for settings, message in changed:
        with pytest.raises(ConfigError, match="belongs to another run") as err:
            _resume(tmp_path, last, **settings)
        assert message in str(err.value), str(err.value)
    _resume(tmp_path, last, epochs=3)  # more epochs: the same run


def test_a_clipped_run_resumes_only_clipped_the_same_way(tmp_path):
    _, folder = _fit(tmp_path, "a", gradient_clip_val=0.5, gradient_clip_algorithm="value")
    last = folder / "epoch=0.ckpt"
    assert torch.load(last, weights_only=True)["ncf_run"]["defines"]["trainer"] == {
        "gradient_clip_val": 0.5, "gradient_clip_algorithm": "value"}
    with pytest.raises(ConfigError, match="trainer.gradient_clip_algorithm 'value' there, 'norm' now"):
        _resume(tmp_path, last, gradient_clip_val=0.5)
    with pytest.raises(ConfigError, match="trainer.gradient_clip_val 0.5 there, None now"):
        _resume(tmp_path, last)
    _resume(tmp_path, last, gradient_clip_val=0.5, gradient_clip_algorithm="value")


def test_a_checkpoint_without_identity_or_checksums_is_refused(tmp_path, capsys):
    from explain.cli import main as explain_main

    _, folder = _fit(tmp_path, "a")
    path = folder / "epoch=0.ckpt"
    ck = torch.load(path, weights_only=True)
    no_run = {k: v for k, v in ck.items() if k != "ncf_run"}
    torch.save(no_run, tmp_path / "no_run.ckpt")
    with pytest.raises(ConfigError, match="carries no run identity .*start a fresh run without --ckpt_path"):
        _resume(tmp_path, tmp_path / "no_run.ckpt")

    # weights negated, the checksum dropped: refused by every entry point
    neg = dict(ck, state_dict={k: -v for k, v in ck["state_dict"].items()})
    del neg[DIGEST_KEY]
    bad = tmp_path / "negated.ckpt"
    torch.save(neg, bad)
    with pytest.raises(CheckpointError, match="carries no weights checksum"):
        load_network(bad)
    capsys.readouterr()
    assert explain_main([str(bad), "--user", "u1", "--item", "m3", "--quiet"]) == 2
    assert "carries no weights checksum" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="carries no weights checksum"):
        _resume(tmp_path, bad)
    dm = _dm(tmp_path)
    module = make_module("gmf", dm.num_users, dm.num_items, factor=4, num_layers=2, lr=0.01)
    with pytest.raises(CheckpointError, match="carries no weights checksum"):
        _trainer(tmp_path / "t", 1).test(module, dm, ckpt_path=str(bad))
    _, mlp_folder = _fit(tmp_path, "mlp", model="mlp")
    neumf = make_module("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2, pretrained_gmf=str(bad),
                      pretrained_mlp=str(mlp_folder / "epoch=0.ckpt"))
    with pytest.raises(CheckpointError, match="carries no weights checksum"):
        _trainer(tmp_path / "n", 1).fit(neumf, dm)


def test_a_flipped_bit_in_the_optimizer_state_stops_the_resume(tmp_path):
    _, folder = _fit(tmp_path, "a")
    ck = torch.load(folder / "epoch=0.ckpt", weights_only=True)
    assert ck[STATE_KEY] == state_digest(ck)
    moment = ck["optimizer_states"][0]["state"][0]["exp_avg"]
    moment.view(-1).view(torch.int32)[3] ^= 1 << 20
    torch.save(ck, tmp_path / "flipped.ckpt")
    load_network(tmp_path / "flipped.ckpt")  # the weights are intact: explaining it is fine
    with pytest.raises(CheckpointError, match="training state .* does not match the hash"):
        _resume(tmp_path, tmp_path / "flipped.ckpt")
    del ck[STATE_KEY]
    torch.save(ck, tmp_path / "unsealed.ckpt")
    with pytest.raises(CheckpointError, match="carries no checksum of its training state"):
        _resume(tmp_path, tmp_path / "unsealed.ckpt")
    _resume(tmp_path, folder / "epoch=0.ckpt")  # intact: resumes


def test_history_reads_only_the_explained_runs_epoch_checkpoints(tmp_path, capsys):
    from explain.cli import main as explain_main
    from explain.history import load_epoch_models
    from ncf.checkpoint import read_checkpoint

    first, folder = _fit(tmp_path, "a", epochs=2)
    second, other = _fit(tmp_path, "b", epochs=1, lr=0.05)
    like = read_checkpoint(folder / "epoch=1.ckpt")
    assert [m.epoch for m in load_epoch_models(folder, like)] == [0, 1]
    shutil.copy(other / "epoch=0.ckpt", folder / "epoch=0.ckpt")  # same model and data, another run
    with pytest.raises(CheckpointError, match=f"epoch=0.ckpt is an epoch checkpoint of run {second.run_id}, not of "
                                              f"the explained checkpoint's run {first.run_id}"):
        load_epoch_models(folder, like)
    capsys.readouterr()
    assert explain_main([str(folder / "epoch=1.ckpt"), "--user", "u1", "--item", "m3", "--methods", "deeplift",
                         "--history", "--history-checkpoints", str(folder), "--data", str(_data(tmp_path)),
                         "--no-faithfulness", "--quiet"]) == 2
    assert f"of run {second.run_id}" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="carries no run id"):
        load_epoch_models(folder, {k: v for k, v in like.items() if k != "ncf_run"})


def test_pretraining_compares_the_id_mapping_and_the_split(tmp_path):
    _, gmf_folder = _fit(tmp_path, "gmf")
    _, mlp_folder = _fit(tmp_path, "mlp", model="mlp")
    gmf, mlp = gmf_folder / "epoch=0.ckpt", mlp_folder / "epoch=0.ckpt"

    def neumf_fit(gmf_path, mlp_path=mlp, **dm_kw):
        dm = _dm(tmp_path, **dm_kw)
        module = make_module("neumf", dm.num_users, dm.num_items, factor=4, num_layers=2, lr=0.01,
                           pretrained_gmf=str(gmf_path), pretrained_mlp=str(mlp_path))
        _trainer(tmp_path / "neumf", 1).fit(module, dm)

    ck = torch.load(gmf, weights_only=True)
    ids = list(ck["NCFDataModule"]["user_ids"])
    ids[0], ids[1] = ids[1], ids[0]
    ck["NCFDataModule"] = dict(ck["NCFDataModule"], user_ids=ids)
    torch.save(ck, tmp_path / "swapped.ckpt")
    with pytest.raises(ConfigError, match=rf"swapped.ckpt \(--model.pretrained_gmf\) was trained with another id mapping "
                                          rf"than this run's data \(user index 0 is id {ids[0]!r} there, {ids[1]!r} now\)"):
        neumf_fit(tmp_path / "swapped.ckpt")
    _, other_split = _fit(tmp_path, "gmf_split1", dm_kw={"split_seed": 1})
    with pytest.raises(ConfigError, match=r"\(--model.pretrained_gmf\) was trained on another split than this run's "
                                          r"\(data.split_seed 1 there, 0 now\)"):
        neumf_fit(other_split / "epoch=0.ckpt")
    neumf_fit(gmf)  # the data both were trained on


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_get_the_mode_of_a_plain_write(tmp_path, umask):
    import pandas as pd

    from explain.record import write_atomic, write_epoch
    from ncf.predict import _write_frame
    from ncf.files import atomic_write_bytes

    old = os.umask(umask)
    try:
        frame = pd.DataFrame({"a": [1, 2]})
        atomic_write_bytes(b"x", tmp_path / "last.ckpt")
        write_atomic(tmp_path / "manifest.json", "{}")
        write_epoch(tmp_path / "rec", 0, frame, frame)
        _write_frame(frame, tmp_path / "recommendations.csv")
        _write_frame(frame, tmp_path / "recommendations.parquet")
        (tmp_path / "plain.txt").write_text("x")
        want = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
        assert want == 0o666 & ~umask
        written = [tmp_path / n for n in ("last.ckpt", "manifest.json", "recommendations.csv", "recommendations.parquet")]
        written += sorted((tmp_path / "rec").iterdir())
        assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {p.name: oct(want) for p in written}
        os.chmod(tmp_path / "last.ckpt", 0o640)  # an existing file keeps its mode, as with a plain write
        atomic_write_bytes(b"y", tmp_path / "last.ckpt")
        assert stat.S_IMODE((tmp_path / "last.ckpt").stat().st_mode) == 0o640
        assert (tmp_path / "last.ckpt").read_bytes() == b"y"
    finally:
        os.umask(old)


def test_a_refused_resume_names_the_nested_setting_that_differs():
    """A network's or objective's settings are nested: the refusal names the one that differs, not the whole
    dict; another class is one line with its class path."""
    from ncf.run import check_resume, defining, fingerprint

    def model(factor=64, network="ncf.models.GMF", objective="ncf.objectives.PointwiseLogLoss"):
        return {"lr": 0.002, "network": {"class_path": network, "init_args": {"factor": factor, "dropout": 0.1}},
                "objective": {"class_path": objective, "init_args": {}}}

    saved = defining(model(), {"batch_size": 256}, "abc", "0")
    run = {"id": "r1", "defines": saved, "fingerprint": fingerprint(saved)}
    with pytest.raises(ConfigError) as err:
        check_resume(run, defining(model(factor=32), {"batch_size": 256}, "abc", "0"))
    assert "model.network.init_args.factor 64 there, 32 now" in str(err.value)
    assert "dropout" not in str(err.value)  # the settings that are equal are not listed
    with pytest.raises(ConfigError) as err:
        check_resume(run, defining(model(network="ncf.models.MLP", factor=8), {"batch_size": 256}, "abc", "0"))
    assert "model.network 'ncf.models.GMF' there, 'ncf.models.MLP' now" in str(err.value)
    assert "factor" not in str(err.value)  # another class: its class path alone
    no_objective = {k: v for k, v in model().items() if k != "objective"} | {"objective": None}
    with pytest.raises(ConfigError) as err:
        check_resume(run, defining(no_objective, {"batch_size": 256}, "abc", "0"))
    assert "model.objective 'ncf.objectives.PointwiseLogLoss' there, None now" in str(err.value)
    check_resume(run, defining(model(), {"batch_size": 256}, "abc", "0"))  # the same run
