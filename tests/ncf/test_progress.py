"""What a training run writes as it goes: a redirected log gets one line per epoch, not a progress bar's
redraws, and TensorBoard's hp_metric is the best validation NDCG@10."""
import os
import re
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from ncf.progress import epoch_line
from tests.ncf.test_own_data import write_sorted_counts

REPO = Path(__file__).resolve().parents[2]


def _fit(tmp_path, *extra):
    data = write_sorted_counts(tmp_path / "counts.tsv")
    log = tmp_path / "train.log"
    cmd = [sys.executable, str(REPO / "train.py"), "fit", "--data.dataset", str(data),
           "--data.num_eval_negatives", "20", "--data.batch_size", "16", "--model.network", "ncf.models.GMF",
           "--model.network.factor", "8", "--model.lr", "0.01", "--trainer.max_epochs", "3",
           "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path / "run"),
           "--trainer.logger", "pytorch_lightning.loggers.TensorBoardLogger",
           "--trainer.logger.save_dir", str(tmp_path / "tb"), *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "w") as f:  # stdout and stderr redirected to a file, as `train.py fit ... > log 2>&1`
        run = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, timeout=300)
    text = log.read_text()
    assert run.returncode == 0, text[-3000:]
    return text


def test_redirected_log_has_one_line_per_epoch_and_hp_metric_is_the_best_val_ndcg(tmp_path):
    text = _fit(tmp_path)
    lines = text.splitlines()
    epochs = [ln for ln in lines if ln.startswith("epoch ")]
    assert [ln.split()[1] for ln in epochs] == ["0/2", "1/2", "2/2"], text
    for ln in epochs:
        assert re.fullmatch(r"epoch \d/2  train_loss \d\.\d{4}  val_hr10 \d\.\d{4}  val_ndcg10 \d\.\d{4}  \d+\.\d s", ln), ln
    # ~45 steps per epoch: a bar would redraw far more often than this
    assert len(lines) < 60 and "\r" not in text and "it/s" not in text, text[:3000]

    events = next((tmp_path / "tb").rglob("events.out.tfevents.*"))
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    val = [e.value for e in acc.Scalars("val_ndcg10")]
    hp = [e.value for e in acc.Scalars("hp_metric")]
    assert len(val) == 3
    assert abs(hp[-1] - max(val)) < 1e-6 and hp[-1] != -1
    # the line's val_ndcg10 is the one logged
    assert [float(ln.split("val_ndcg10 ")[1].split()[0]) for ln in epochs] == [round(v, 4) for v in val]


def test_an_epoch_without_validation_shows_no_validation_figures(tmp_path):
    """Lightning keeps the latest validation's metrics: they are not shown again as a later epoch's."""
    text = _fit(tmp_path, "--trainer.check_val_every_n_epoch", "2", "--trainer.max_epochs", "3")
    epochs = [ln for ln in text.splitlines() if ln.startswith("epoch ")]
    assert [("val_ndcg10" in ln) for ln in epochs] == [False, True, False], epochs


def test_the_bar_can_still_be_forced(tmp_path):
    text = _fit(tmp_path, "--trainer.enable_progress_bar", "true", "--trainer.max_epochs", "1")
    assert "it/s" in text and not any(ln.startswith("epoch ") for ln in text.splitlines())


def test_epoch_line_format():
    line = epoch_line(3, 10, {"val_hr10": 0.6543, "train_loss": 0.31204, "val_ndcg10": 0.381, "epoch": 3}, 1.234)
    assert line == "epoch 3/9  train_loss 0.3120  val_hr10 0.6543  val_ndcg10 0.3810  1.2 s"
