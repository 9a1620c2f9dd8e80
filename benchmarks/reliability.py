"""Try hard to break train.py, explain.py and tune.py, and count what happens (RELIABILITY.md).

Four parts, the first three generated from a seed:

* **Kill and resume.** A small NeuMF (dropout on, so the random generator's state matters) trains 4 epochs
  on a synthetic file with the attribution callback. Each trial kills the process with SIGKILL: in the
  middle of the N-th checkpoint write, of the N-th attribution-record write (half the temporary file
  written), or after a random delay; some trials are killed a second time while resuming. Then
  ``fit --ckpt_path last`` (the README's resume) runs to the end. A trial passes when every checkpoint
  (``best.ckpt``, ``last.ckpt`` with its optimizer state, each per-epoch file), the best validation score
  and the attribution record equal those of an uninterrupted run, and nothing is left over: no temporary
  file anywhere in the run folder or in the system temp folder, no superseded folder.
* **Bad inputs.** Data files, paper-format splits, a user's candidates and ids (``predict`` against
  ``explain.py --top-n``, dropped users, zero-padded ids, repeated paper negatives), damaged or edited
  checkpoints (through explain.py, ``fit --ckpt_path``, ``test --ckpt_path`` and ``--model.pretrained_gmf``;
  among them checkpoints without their run identity or checksums, with a flipped bit in the optimizer state
  or a swapped id mapping), intact files used where they do not belong (a resume with trainer settings that
  change the weights, another run's epoch checkpoint in the history folder, a pretrained GMF of another id
  mapping or split),
  and arguments. Each case says
  whether it must be refused or accepted (and then what the right result is). ``unhandled``: a traceback
  or an exit code other than 0 and 2; ``silently_wrong``: exit 0 where the input had to be refused, or an
  accepted input giving a wrong result.
* **Errors a user makes.** Config-key typos on the command line and in a YAML (one line naming the closest
  key, and the file and line), a missing data file (with and without ``--debug``), names files with other
  separators, the k-core options, and the tracebacks a user could hit (another dataset's checkpoint, text
  that is not UTF-8, ``--model.k`` against the config's monitor, negative settings, sizes that cannot be
  allocated, weights that do not fit). ``ok``: refused in one line saying what is wrong, or accepted with
  the right result; ``unclear``: refused, but not in one such line.
* **Crafted files.** Checkpoints whose pickle runs code when unpickled unsafely, and checkpoints that
  steer paths (the callback's output folder, ModelCheckpoint's best/last paths, the data and names files
  explain.py would read). Refused means: no code ran, no file outside the run was written, deleted or read.
* **The tuner.** ``tune.py`` on a tiny synthetic file (:func:`run_tuner_cases`): ``best.yaml`` trained with
  train.py must reach the best trial's validation score; options setting a searched key, and a study folder
  continued with other data, ``max_epochs`` or search space, must be refused in one line; an error inside a
  trial must be one line, exit 2. Counted with the bad inputs' ``unhandled`` and ``silently_wrong``.

    python benchmarks/reliability.py                    # 50 kill trials, ~290 inputs: ~25 min on 2 cores
    python benchmarks/reliability.py --kills 3 --inputs 40   # the CI subset (tests/test_reliability.py)
    python benchmarks/reliability.py --kills 0 --only checkpoints   # one group of inputs (here: checkpoints)

Prints one JSON line per part and, last, the totals.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from _common import REPO, emit

import torch
import yaml

CHILD = str(Path(__file__).resolve().parent / "_kill_child.py")


def RUN(work: Path, data: Path | str = "data.csv") -> Path:
    """The folder train.py gives the trial config's run on ``data`` in ``work`` (runs/<data>/neumf)."""
    return work / "runs" / Path(data).stem / "neumf"


# ---------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------
def write_interactions(path: Path, n_users: int = 24, n_items: int = 40, per_user: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = ["user,item,rating,timestamp"]
    for u in range(n_users):
        for k, i in enumerate(rng.choice(n_items, size=per_user, replace=False)):
            lines.append(f"u{u},m{i},{rng.integers(1, 6)},{1000 + 10 * k + int(rng.integers(0, 3))}")
    path.write_text("\n".join(lines) + "\n")
    return path


def trial_config(work: Path, data: Path, epochs: int = 4) -> Path:
    cfg = yaml.safe_load((REPO / "configs" / "neumf.yaml").read_text())
    cfg["trainer"].update(max_epochs=epochs, enable_progress_bar=False, enable_model_summary=False)
    cfg["trainer"]["callbacks"].append({"class_path": "explain.AttributionCallback", "init_args": {
        "methods": ["deeplift", "lime"], "num_probe_users": 4, "n_samples": 256, "plots": False}})
    cfg["model"]["network"]["init_args"] = {"factor": 4, "num_layers": 2, "dropout": 0.1}
    cfg["model"]["lr"] = 0.01
    cfg["data"].update(dataset=str(data), batch_size=64, num_eval_negatives=20)
    path = work / "neumf.yaml"  # its runs go to runs/<data file name>/neumf
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------------------------------------------
# kill and resume
# ---------------------------------------------------------------------------------------------------
def _child(work: Path, spec: str, args: list[str], kill_after: float | None = None) -> int:
    env = dict(os.environ, TMPDIR=str(work / "systemp"), PYTHONHASHSEED="0", NCF_DEBUG="1")
    (work / "systemp").mkdir(exist_ok=True)
    proc = subprocess.Popen([sys.executable, CHILD, spec, "--", *args], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=kill_after)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        return -9
    if proc.returncode not in (0, -9):
        (work / "child_error.txt").write_text(err)
    return proc.returncode


def _ckpts(work: Path) -> dict[str, dict]:
    root = RUN(work) / "checkpoints"
    return {str(p.relative_to(root)): torch.load(p, weights_only=True) for p in sorted(root.rglob("*.ckpt"))
            if "superseded" not in p.parts}


def _same_tensors(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same_tensors(x, y) for x, y in zip(a, b))
    return a == b


def _best_score(ck: dict):
    for key, state in ck.get("callbacks", {}).items():
        if "monitor='val_ndcg10'" in key:
            return float(state["best_model_score"])
    return None


def compare(ref: Path, got: Path) -> list[str]:
    """What differs between an uninterrupted run and a killed-and-resumed one, or is left over."""
    import pandas as pd

    from explain.record import load_record, recorded_epochs

    problems = []
    a, b = _ckpts(ref), _ckpts(got)
    if a.keys() != b.keys():
        problems.append(f"checkpoint files differ: {sorted(set(a) ^ set(b))}")
    for name in sorted(set(a) & set(b)):
        if not _same_tensors(a[name]["state_dict"], b[name]["state_dict"]) or a[name].get("epoch") != b[name].get("epoch"):
            problems.append(f"{name}: weights or epoch differ")
        if name == "last.ckpt" and not _same_tensors(a[name]["optimizer_states"], b[name]["optimizer_states"]):
            problems.append("last.ckpt: optimizer state differs")
    if "last.ckpt" in a and "last.ckpt" in b and _best_score(a["last.ckpt"]) != _best_score(b["last.ckpt"]):
        problems.append("best validation score differs")
    rec_a, rec_b = RUN(ref) / "attributions", RUN(got) / "attributions"
    if recorded_epochs(rec_a) != recorded_epochs(rec_b):
        problems.append(f"record epochs {recorded_epochs(rec_b)} vs {recorded_epochs(rec_a)}")
    else:
        _, pa = load_record(rec_a)
        _, pb = load_record(rec_b)
        try:
            pd.testing.assert_frame_equal(pb.drop(columns=["stability"]), pa.drop(columns=["stability"]), rtol=1e-5)
            pd.testing.assert_series_equal(pb["stability"], pa["stability"], atol=1e-3)
        except AssertionError as err:
            problems.append(f"record differs: {str(err).splitlines()[0]}")
    left = [str(p.relative_to(got)) for p in got.rglob("*") if p.name.endswith(".tmp") or "superseded" in p.parts]
    # the system temp folder: anything an uninterrupted run does not leave there too (torch's compile cache)
    usual = set(os.listdir(ref / "systemp")) if (ref / "systemp").exists() else set()
    left += [f"systemp/{p.name}" for p in (got / "systemp").iterdir() if p.name not in usual] \
        if (got / "systemp").exists() else []
    if left:
        problems.append(f"left over: {left[:4]}")
    return problems


def kill_resume(out: Path, trials: int, seed: int) -> dict:
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    data = write_interactions(out / "data.csv")
    ref = out / "reference"
    ref.mkdir(parents=True)
    cfg = trial_config(ref, data)
    t0 = time.perf_counter()
    rc = _child(ref, f"count:{ref / 'counts.json'}", ["fit", "--config", str(cfg)])
    ref_s = time.perf_counter() - t0
    assert rc == 0, (ref / "child_error.txt").read_text() if (ref / "child_error.txt").exists() else rc
    counts = json.loads((ref / "counts.json").read_text())
    results, kinds = [], {"checkpoint": 0, "record": 0, "time": 0}
    for t in range(trials):
        work = out / f"trial{t}"
        work.mkdir()
        cfg = trial_config(work, data)
        plan = []
        for _ in range(2 if rng.random() < 0.3 else 1):
            kind = rng.choice(["checkpoint", "checkpoint", "record", "record", "time"])
            kinds[kind] += 1
            plan.append((kind, rng.randint(1, counts[kind]) if kind != "time" else rng.uniform(2.0, ref_s)))
        codes = []
        for k, (kind, n) in enumerate(plan):
            resume = ["--ckpt_path", "last"] if k > 0 else []
            if kind == "time":
                codes.append(_child(work, "none", ["fit", "--config", str(cfg), *resume], kill_after=n))
            else:
                codes.append(_child(work, f"{kind}:{n}", ["fit", "--config", str(cfg), *resume]))
        codes.append(_child(work, "none", ["fit", "--config", str(cfg), "--ckpt_path", "last"]))
        problems = [f"exit {codes[-1]}"] if codes[-1] != 0 else compare(ref, work)
        results.append({"trial": t, "plan": [[k, round(n, 2)] for k, n in plan], "codes": codes, "problems": problems})
        if not problems:
            shutil.rmtree(work)
    failed = [r for r in results if r["problems"]]
    return {"part": "kill_resume", "kill_resume_trials": trials, "kill_resume_passed": trials - len(failed),
            "kills_by_kind": kinds, "killed_runs": sum(c == -9 for r in results for c in r["codes"]),
            "writes_per_run": counts, "failures": failed[:5]}


# ---------------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------------
class Outcome:
    def __init__(self, code: int, err: str, out: str, value=None):
        self.code, self.err, self.out, self.value = code, err, out, value

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.err


def _call(fn, argv: list[str]) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    code, ret = 0, None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            ret = fn(argv)
            code = ret if isinstance(ret, int) else 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        except BaseException:  # an exception that escaped the entry point: unhandled
            import traceback

            traceback.print_exc(file=err)
            code = 1
    torch.set_grad_enabled(True)
    return Outcome(code, err.getvalue(), out.getvalue(), ret)


def train(argv: list[str]) -> Outcome:
    from ncf.cli import main

    return _call(lambda a: main(a), argv)


def explain(argv: list[str]) -> Outcome:
    from explain.cli import main

    return _call(main, argv)


FIT_SMALL = ["--model.network", "ncf.models.GMF", "--model.network.factor", "4", "--data.num_eval_negatives", "20",
             "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary",
             "false", "--trainer.logger", "false"]

# A small NeuMF (of GMF and MLP at FIT_SMALL's factor): what pretrained checkpoints initialise.
NEUMF_SMALL = ["--model.network", "ncf.models.NeuMF", "--model.network.factor", "4"]


def data_cases(d: Path, rng: random.Random) -> list[tuple[str, Path, str, object]]:
    """(name, file, expect, check): expect 'refuse' or 'accept' (check(module) says whether the result is right)."""
    good = write_interactions(d / "good.csv").read_text().splitlines()
    header, rows = good[0], good[1:]
    cases = []

    def add(name, text, expect="refuse", check=None, binary=False):
        path = d / f"{name}.csv"
        path.write_bytes(text if binary else text.encode())
        cases.append((name, path, expect, check))

    add("empty", "")
    add("header_only", header + "\n")
    add("binary", bytes(rng.getrandbits(8) for _ in range(600)), binary=True)
    add("no_item_column", "user,rating,timestamp\n" + "\n".join(",".join(r.split(",")[i] for i in (0, 2, 3)) for r in rows))
    add("text_timestamps", header + "\n" + "\n".join(r.rsplit(",", 1)[0] + ",yesterday" for r in rows))
    for bad in ("inf", "-inf", "nan", "1e30", "-1e30", "9223372036854775808"):
        k = rng.randrange(len(rows))
        add(f"timestamp_{bad}", "\n".join([header] + rows[:k] + [rows[k].rsplit(",", 1)[0] + "," + bad] + rows[k + 1:]))
    add("ragged_line", "\n".join([header] + rows[:5] + ["u1,m2,3,1000,extra,fields"] + rows[5:]))
    add("too_few_per_user", header + "\n" + "\n".join(rows[::5]))
    add("one_user", header + "\n" + "\n".join(r for r in rows if r.startswith("u0,")))
    add("empty_ids", "\n".join([header] + rows[:3] + [",m1,3,1000"] + rows[3:]))
    add("utf8_bom", "\ufeff" + "\n".join(good), "accept", lambda m: m.hparams.n_users == 24)
    add("crlf", "\r\n".join(good), "accept", lambda m: m.hparams.n_users == 24)
    add("padded_ids", "\n".join([header] + [",".join(f" {v} " if j < 2 else v for j, v in enumerate(r.split(",")))
                                               for r in rows]), "accept", lambda m: m.hparams.n_users == 24)
    add("duplicate_rows", "\n".join([header] + rows + rows[:10]), "either",
        lambda m: m.hparams.n_users == 24 and m.hparams.n_items <= 40)
    text = "\n".join(good)
    for k in range(5):  # one character replaced by a NUL byte: refused, or (in an unused column) harmless
        at = rng.randrange(len(header) + 1, len(text))
        add(f"garbled_{k}", text[:at] + "\x00" + text[at + 1:], "either",
            lambda m: m.hparams.n_users == 24 and m.hparams.n_items <= 40)
    return cases


def _expected(case_expect, out: Outcome, check, module) -> str:
    if out.traceback or out.code not in (0, 2):
        return "unhandled"
    if case_expect == "refuse":
        return "ok" if out.code == 2 else "silently_wrong"
    if case_expect == "either" and out.code == 2:
        return "ok"
    if out.code != 0:
        return "wrongly_refused"
    return "ok" if check is None or check(module) else "silently_wrong"


def run_data_cases(d: Path, rng: random.Random, limit: int) -> list[dict]:
    rows = []
    for name, path, expect, check in data_cases(d, rng)[:limit]:
        out = train(["fit", "--data.dataset", str(path), *FIT_SMALL, "--trainer.default_root_dir", str(d / "r")])
        model = getattr(out.value, "model", None)
        rows.append({"kind": "data", "case": name, "verdict": _expected(expect, out, check, model),
                     "code": out.code, "first_line": out.err.strip().splitlines()[-1][:160] if out.err.strip() else ""})
    return rows


def paper_cases(d: Path) -> list[tuple[str, dict[str, str]]]:
    train = "0\t0\t5\t1\n0\t1\t5\t2\n1\t2\t5\t1\n1\t3\t4\t3\n2\t0\t3\t1\n2\t4\t3\t2\n"
    test = "0\t2\t5\t9\n1\t0\t5\t9\n2\t1\t5\t9\n"
    neg = lambda k: "".join(f"({u},{i})\t" + "\t".join(str(5 + j) for j in range(k)) + "\n" for u, i in ((0, 2), (1, 0), (2, 1)))  # noqa: E731
    base = {"train": train, "test": test, "negative": neg(20)}
    return [
        ("too_few_negatives", {**base, "negative": neg(5)}),
        ("negative_is_a_positive", {**base, "negative": neg(20).replace("(0,2)\t5", "(0,2)\t1", 1)}),
        ("head_disagrees", {**base, "negative": neg(20).replace("(1,0)", "(1,3)", 1)}),
        ("negative_id_negative", {**base, "negative": neg(20).replace("\t24\n", "\t-3\n", 1)}),
        ("negative_not_a_number", {**base, "negative": neg(20).replace("\t24\n", "\tabc\n", 1)}),
        ("test_user_missing", {**base, "test": test.splitlines()[0] + "\n"}),
        ("test_line_short", {**base, "test": test.replace("1\t0\t5\t9", "1\t0", 1)}),
        ("train_not_numbers", {**base, "train": train.replace("0\t1\t5\t2", "a\tb\tc\td", 1)}),
        ("missing_negative_file", {k: v for k, v in base.items() if k != "negative"}),
    ]


def run_paper_cases(d: Path) -> list[dict]:
    rows = []
    for name, files in paper_cases(d):
        folder = d / f"paper_{name}"
        folder.mkdir()
        for part, text in files.items():
            (folder / f"p.{part}.rating" if part != "negative" else folder / "p.test.negative").write_text(text)
        out = train(["fit", "--data.dataset", str(folder / "p"), *FIT_SMALL, "--trainer.default_root_dir", str(folder)])
        rows.append({"kind": "paper_split", "case": name, "verdict": _expected("refuse", out, None, None),
                     "code": out.code, "first_line": out.err.strip().splitlines()[-1][:160] if out.err.strip() else ""})
    return rows


def _reference_checkpoint(d: Path) -> tuple[Path, Path]:
    data = write_interactions(d / "ckdata.csv")
    out = train(["fit", "--data.dataset", str(data), *FIT_SMALL[:-4], "--trainer.max_epochs", "2",
                 "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
                 "--trainer.default_root_dir", str(d / "refrun"), "--trainer.callbacks+=ModelCheckpoint",
                 "--trainer.callbacks.dirpath", str(d / "refrun" / "ck"), "--trainer.callbacks.filename", "ref"])
    assert out.code == 0, out.err[-2000:]
    return d / "refrun" / "ck" / "ref.ckpt", data


def checkpoint_variants(ref: Path, d: Path, rng: random.Random, n_random: int) -> list[tuple[str, Path]]:
    raw = ref.read_bytes()
    ck = torch.load(ref, weights_only=True)
    out = []

    def save(name, obj=None, data=None):
        path = d / f"ck_{name}.ckpt"
        if data is not None:
            path.write_bytes(data)
        else:
            torch.save(obj, path)
        out.append((name, path))

    save("empty", data=b"")
    save("four_bytes", data=raw[:4])
    save("text", data=b"this is not a checkpoint\n" * 20)
    save("random_bytes", data=bytes(rng.getrandbits(8) for _ in range(4096)))
    for k in range(n_random):
        save(f"truncated_{k}", data=raw[: rng.randrange(1, len(raw))])
    for k in range(n_random):  # one flipped bit anywhere in the file
        b = bytearray(raw)
        at = rng.randrange(len(b))
        b[at] ^= 1 << rng.randrange(8)
        save(f"bitflip_{k}", data=bytes(b))
    for k in range(n_random // 2):  # one flipped bit inside a weight tensor (the zip's CRC is not checked)
        c = torch.load(ref, weights_only=True)
        name = rng.choice(sorted(c["state_dict"]))
        t = c["state_dict"][name]
        t.view(-1).view(torch.int32)[rng.randrange(t.numel())] ^= 1 << rng.randrange(31)
        save(f"weight_bitflip_{k}", c)
    for label, value in (("nan", float("nan")), ("inf", float("inf"))):
        c = torch.load(ref, weights_only=True)
        c["state_dict"]["net.user_embedding.weight"][0, 0] = value
        from ncf.checkpoint import DIGEST_KEY, weights_digest

        c[DIGEST_KEY] = weights_digest(c["state_dict"])  # a consistent digest: only the finiteness check can stop it
        save(f"weights_{label}", c)
    for key, value in (("epoch", "abc"), ("epoch", None)):
        c = dict(ck)
        c[key] = value
        save(f"{key}_{value}", c)
    hp = ck["hyper_parameters"]
    for key, value in (("n_users", -5), ("n_users", 10 ** 9), ("factor", 0), ("class_path", "ncf.models.BPR"),
                       ("factor", "x"), ("num_layers", 7)):
        net = hp["network"]  # the network's class path, its constructor arguments (init_args)
        net = {**net, key: value} if key == "class_path" else {**net, "init_args": {**net["init_args"], key: value}}
        c = dict(ck)
        c["hyper_parameters"] = {**hp, key: value} if key == "n_users" else {**hp, "network": net}
        save(f"hp_{key}_{value}", c)
    c = dict(ck)  # a checkpoint naming its model by a string, as older ones do, that names none of ours
    c["hyper_parameters"] = {**{k: v for k, v in hp.items() if k != "network"}, "model": "bpr", "factor": 4}
    save("hp_model_bpr", c)
    c = dict(ck)
    del c["state_dict"]
    save("no_state_dict", c)
    c = dict(ck)
    c["NCFDataModule"] = {**ck["NCFDataModule"], "user_ids": ck["NCFDataModule"]["user_ids"][:-1]}
    save("id_mapping_short", c)
    c = dict(ck)
    c["state_dict"] = {k: v for k, v in ck["state_dict"].items() if "item" not in k}
    save("missing_tensor", c)
    c = dict(ck)
    del c["ncf_run"]
    save("identity_missing", c)  # weights intact: explain and test may use it; a resume cannot be checked
    from ncf.checkpoint import DIGEST_KEY, STATE_KEY

    c = dict(ck, state_dict={k: -v for k, v in ck["state_dict"].items()})
    del c[DIGEST_KEY]
    save("checksum_missing_negated", c)  # without its checksum the negated weights could pass anywhere
    c = dict(ck)
    del c[STATE_KEY]
    save("state_checksum_missing", c)
    c = torch.load(ref, weights_only=True)
    moments = [t for st in c["optimizer_states"][0]["state"].values() for t in st.values()
               if isinstance(t, torch.Tensor) and t.numel() > 1]
    t = rng.choice(moments)
    t.view(-1).view(torch.int32)[rng.randrange(t.numel())] ^= 1 << rng.randrange(31)
    save("optimizer_state_bitflip", c)
    c = dict(ck)
    ids = list(ck["NCFDataModule"]["user_ids"])
    ids[0], ids[1] = ids[1], ids[0]
    c["NCFDataModule"] = {**ck["NCFDataModule"], "user_ids": ids}
    save("id_mapping_swapped", c)
    zbuf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw)) as src, zipfile.ZipFile(zbuf, "w") as dst:
        names = src.namelist()
        for name in names[:-2]:
            dst.writestr(name, src.read(name))
    save("zip_missing_entries", data=zbuf.getvalue())
    return out


# Variants whose weights are intact but that these consumers must still refuse: resuming needs the run's
# identity and an intact training state (optimizer, schedulers, progress), both verified.
MUST_REFUSE = {"identity_missing": {"fit_ckpt_path"}, "state_checksum_missing": {"fit_ckpt_path"},
               "optimizer_state_bitflip": {"fit_ckpt_path"}}


def run_checkpoint_cases(d: Path, rng: random.Random, n_random: int) -> list[dict]:
    ref, data = _reference_checkpoint(d)
    ex_ref = d / "ex_ref"
    base = ["--user", "u1", "--item", "m3", "--methods", "deeplift", "--no-faithfulness", "--quiet", "--data", str(data)]
    good = explain([str(ref), *base, "--out", str(ex_ref)])
    assert good.code == 0, good.err
    want = json.loads((ex_ref / "explanations.json").read_text())["checkpoints"][0]["pairs"]
    rows = []
    for name, path in checkpoint_variants(ref, d, rng, n_random):
        exd = d / f"ex_{name}"
        outcomes = {
            "explain": explain([str(path), *base, "--out", str(exd)]),
            "fit_ckpt_path": train(["fit", "--data.dataset", str(data), *FIT_SMALL[:-4], "--trainer.max_epochs", "3",
                                    "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                                    "--trainer.default_root_dir", str(d / f"fit_{name}"), "--ckpt_path", str(path)]),
            "test_ckpt_path": train(["test", "--data.dataset", str(data), *FIT_SMALL,
                                     "--trainer.default_root_dir", str(d / f"test_{name}"), "--ckpt_path", str(path)]),
            "pretrained_gmf": train(["fit", "--data.dataset", str(data), *NEUMF_SMALL,
                                     "--model.pretrained_gmf", str(path), "--model.pretrained_mlp", str(path),
                                     *FIT_SMALL[4:], "--trainer.default_root_dir", str(d / f"pre_{name}")]),
        }
        for consumer, out in outcomes.items():
            if out.traceback or out.code not in (0, 2):
                verdict = "unhandled"
            elif out.code == 2:
                verdict = "ok"
            elif consumer in MUST_REFUSE.get(name, ()):
                verdict = "silently_wrong"
            elif consumer == "explain":  # accepted: the explanation must be the intact checkpoint's
                got = json.loads((exd / "explanations.json").read_text())["checkpoints"][0]["pairs"]
                verdict = "ok" if json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True) else "silently_wrong"
            elif consumer == "pretrained_gmf":
                verdict = "silently_wrong"  # a GMF checkpoint cannot be an MLP: accepting it is wrong
            else:  # accepted by Lightning: only if its weights are the intact ones
                try:  # read as Lightning reads it (map_location: a flipped bit may hit a storage's location tag)
                    same = _same_tensors(torch.load(path, weights_only=True, map_location="cpu")["state_dict"],
                                         torch.load(ref, weights_only=True, map_location="cpu")["state_dict"])
                except Exception:
                    same = False
                verdict = "ok" if same else "silently_wrong"
            rows.append({"kind": "checkpoint", "case": f"{name}/{consumer}", "verdict": verdict, "code": out.code,
                         "first_line": out.err.strip().splitlines()[-1][:160] if out.err.strip() else ""})
    return rows + run_identity_cases(d, ref, data)


def _row(case: str, out, expect: str) -> dict:
    """A checkpoint row whose input must be refused (``expect`` 'refuse') or accepted ('accept')."""
    return {"kind": "checkpoint", "case": case, "verdict": _expected(expect, out, None, None), "code": out.code,
            "first_line": out.err.strip().splitlines()[-1][:160] if out.err.strip() else ""}


def run_identity_cases(d: Path, ref: Path, data: Path) -> list[dict]:
    """Intact files used where they do not belong: a resume with trainer settings that change the weights,
    another run's epoch checkpoint among the explained run's, a pretrained GMF of another id mapping or split.
    Each refusal is paired with the same use done right, which must be accepted."""
    rows = []
    resume = ["fit", "--data.dataset", str(data), *FIT_SMALL[:-4], "--trainer.max_epochs", "3", "--trainer.logger",
              "false", "--trainer.enable_progress_bar", "false", "--ckpt_path", str(ref)]
    for k, (label, args, expect) in enumerate((
            ("more_epochs", [], "accept"), ("gradient_clip_val", ["--trainer.gradient_clip_val", "0.5"], "refuse"),
            ("accumulate_grad_batches", ["--trainer.accumulate_grad_batches", "2"], "refuse"),
            ("precision", ["--trainer.precision", "bf16-mixed"], "refuse"),
            ("limit_train_batches", ["--trainer.limit_train_batches", "0.5"], "refuse"))):
        out = train([*resume, "--trainer.default_root_dir", str(d / f"resume_{k}"), *args])
        rows.append(_row(f"resume_trainer_{label}/fit_ckpt_path", out, expect))
    # epoch checkpoints of two runs of the same model and data; the explained run's folder gets a foreign one
    folders = {}
    for run, lr in (("own", "0.01"), ("other", "0.05")):
        out = train(["fit", "--data.dataset", str(data), *FIT_SMALL[:-4], "--trainer.max_epochs", "2",
                     "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--model.lr", lr,
                     "--trainer.default_root_dir", str(d / f"hist_{run}"), "--trainer.callbacks+=ModelCheckpoint",
                     "--trainer.callbacks.dirpath", str(d / f"hist_{run}" / "epochs"),
                     "--trainer.callbacks.filename", "{epoch}", "--trainer.callbacks.save_top_k", "-1"])
        assert out.code == 0, out.err[-2000:]
        folders[run] = d / f"hist_{run}" / "epochs"
    mixed = d / "hist_mixed"
    shutil.copytree(folders["own"], mixed)
    shutil.copy(folders["other"] / "epoch=0.ckpt", mixed / "epoch=0.ckpt")
    history = [str(folders["own"] / "epoch=1.ckpt"), "--data", str(data), "--user", "u1", "--item", "m3", "--methods",
               "deeplift", "--no-faithfulness", "--quiet", "--history", "--history-checkpoints"]
    for label, folder, expect in (("own_run", folders["own"], "accept"), ("foreign_epoch", mixed, "refuse")):
        rows.append(_row(f"history_{label}/explain", explain([*history, str(folder)]), expect))
    # pretraining: a real MLP beside the reference GMF; the GMF with two users swapped, or of another split
    out = train(["fit", "--data.dataset", str(data), *FIT_SMALL[:-4], "--model.network", "ncf.models.MLP",
                 "--trainer.max_epochs", "1",
                 "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir",
                 str(d / "pre_mlp"), "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath",
                 str(d / "pre_mlp" / "ck"), "--trainer.callbacks.filename", "mlp"])
    assert out.code == 0, out.err[-2000:]
    mlp = d / "pre_mlp" / "ck" / "mlp.ckpt"
    ck = torch.load(ref, weights_only=True)
    ids = list(ck["NCFDataModule"]["user_ids"])
    ids[0], ids[1] = ids[1], ids[0]
    swapped = d / "pre_gmf_swapped.ckpt"
    torch.save({**ck, "NCFDataModule": {**ck["NCFDataModule"], "user_ids": ids}}, swapped)
    out = train(["fit", "--data.dataset", str(data), *FIT_SMALL[:-4], "--data.split_seed", "1", "--trainer.max_epochs",
                 "1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir",
                 str(d / "pre_split"), "--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath",
                 str(d / "pre_split" / "ck"), "--trainer.callbacks.filename", "gmf"])
    assert out.code == 0, out.err[-2000:]
    for label, gmf, expect in (("intact", ref, "accept"), ("id_mapping_swapped", swapped, "refuse"),
                               ("other_split", d / "pre_split" / "ck" / "gmf.ckpt", "refuse")):
        out = train(["fit", "--data.dataset", str(data), *NEUMF_SMALL, "--model.pretrained_gmf", str(gmf),
                     "--model.pretrained_mlp", str(mlp), *FIT_SMALL[4:], "--trainer.default_root_dir", str(d / f"pre_{label}")])
        rows.append(_row(f"pretrained_gmf_{label}/pretrained_gmf", out, expect))
    return rows


def run_argument_cases(d: Path, ref: Path, data: Path) -> list[dict]:
    pairs_empty = d / "pairs_empty.csv"
    pairs_empty.write_text("")
    pairs_bin = d / "pairs_bin.csv"
    pairs_bin.write_bytes(bytes(range(256)) * 4)
    pairs_cols = d / "pairs_cols.csv"
    pairs_cols.write_text("a,b\n1,2\n")
    pairs_unknown = d / "pairs_unknown.csv"
    pairs_unknown.write_text("user,item\nnobody,m1\n")
    a_file = d / "a_file.txt"
    a_file.write_text("x")
    pair = ["--user", "u1", "--item", "m3", "--quiet", "--no-faithfulness"]
    ex = [
        ["--n-samples", "0", *pair], ["--n-samples", "-5", *pair], ["--n-samples", "1000000000000", *pair],
        ["--n-samples", "abc", *pair], ["--n-samples", "0", "--lime-preset", "notebook", *pair],
        ["--methods", "kernel_shap", "--n-samples", "0", *pair], ["--methods", "nosuch", *pair],
        ["--seed", "1e23", *pair], ["--seed", "-1", *pair], ["--top-n", "0", "--user", "u1", "--quiet"],
        ["--top-n", "-3", "--user", "u1", "--quiet"],
        ["--user", "nobody", "--item", "m3", "--quiet"], ["--user", "u1", "--item", "nothing", "--quiet"],
        ["--user", "u1", "--quiet"], ["--quiet"], ["--pairs", str(pairs_empty), "--quiet"],
        ["--pairs", str(pairs_bin), "--quiet"], ["--pairs", str(d), "--quiet"], ["--pairs", str(pairs_cols), "--quiet"],
        ["--pairs", str(pairs_unknown), "--quiet"], ["--pairs", str(d / "missing.csv"), "--quiet"],
        ["--out", str(a_file), *pair], ["--history-k", "0", "--history", *pair], ["--cf-epochs", "0", "--history",
                                                                                   "--counterfactual", *pair],
        ["--counterfactual", *pair], ["--backend", "nosuch", *pair], ["--baseline", "nosuch", *pair],
        ["--data", str(d / "missing.csv"), *pair], ["--data", str(a_file), *pair],
        ["--history", "--history-checkpoints", str(d / "none"), *pair],
    ]
    rows = []
    # accepted: more recommendations asked for than the user has unseen items: all of them, in the model's order
    out = explain([str(ref), "--data", str(data), "--top-n", "100000", "--user", "u1", "--quiet", "--methods", "deeplift",
                   "--no-faithfulness", "--out", str(d / "topall")])
    if out.code == 0:
        got = json.loads((d / "topall" / "explanations.json").read_text())["checkpoints"][0]["pairs"]
        from ncf import NCFDataModule

        dm = NCFDataModule(str(data), num_eval_negatives=20)
        dm.setup("fit")
        u = dm.interactions.user_ids.index("u1") if isinstance(dm.interactions.user_ids, list) else \
            list(dm.interactions.user_ids).index("u1")
        unseen = dm.num_items - int((dm.interactions.users == u).sum())  # training rows and held-out items are out
        verdict = "ok" if len(got) == unseen and len({p["item_id"] for p in got}) == unseen else "silently_wrong"
    else:
        verdict = "unhandled" if out.traceback or out.code != 2 else "wrongly_refused"
    rows.append({"kind": "argument", "case": "explain --top-n 100000 (all unseen)", "verdict": verdict, "code": out.code,
                 "first_line": ""})
    for k, args in enumerate(ex):
        out = explain([str(ref), "--data", str(data), *args] if "--data" not in args else [str(ref), *args])
        verdict = "unhandled" if out.traceback or out.code not in (0, 2) else ("ok" if out.code == 2 else "silently_wrong")
        rows.append({"kind": "argument", "case": "explain " + " ".join(a for a in args if not a.startswith("/"))[:80],
                     "verdict": verdict, "code": out.code, "first_line": out.err.strip().splitlines()[-1][:160] if out.err.strip() else ""})
    mlp, neumf = ["--model.network", "ncf.models.MLP"], ["--model.network", "ncf.models.NeuMF"]
    fit = [["--model.lr", "-1"], ["--model.lr", "abc"], ["--model.network.factor", "0"],
           [*mlp, "--model.network.num_layers", "0"], [*mlp, "--model.network.dropout", "1.5"],
           ["--model.weight_decay", "-1"], ["--model.lr_decay", "0"], ["--model.alpha", "2"],
           ["--model.optimizer", "rmsprop"], ["--model.network", "ncf.models.BPR"],
           ["--model.network", "ncf.data.TrainLoader"], ["--data.batch_size", "0"],
           ["--data.num_negatives", "-1"], ["--data.num_eval_negatives", "0"], ["--data.num_eval_negatives", "100000"],
           ["--data.holdout", "sideways"], ["--data.dataset", str(d / "missing.csv")], ["--data.dataset", "ml-1b"],
           ["--model.pretrained_gmf", str(ref)], ["--model.pretrained_gmf", str(d / "missing.ckpt"),
                                                  "--model.pretrained_mlp", str(d / "missing.ckpt"), *neumf],
           ["--ckpt_path", str(d / "missing.ckpt")], ["--data.item_names", str(d / "missing.csv")],
           ["--data.item_names", str(pairs_bin)], [*neumf, "--model.network.mlp_embedding", "0"],
           [*mlp, "--model.network.embedding", "0"], ["--trainer.max_epochs", "abc"]]
    for args in fit:
        out = train(["fit", "--data.dataset", str(data), *FIT_SMALL, "--trainer.default_root_dir", str(d / "argfit"), *args])
        verdict = "unhandled" if out.traceback or out.code not in (0, 2) else ("ok" if out.code == 2 else "silently_wrong")
        rows.append({"kind": "argument", "case": "fit " + " ".join(a for a in args if not a.startswith("/"))[:80],
                     "verdict": verdict, "code": out.code, "first_line": out.err.strip().splitlines()[-1][:160] if out.err.strip() else ""})
    return rows


# ---------------------------------------------------------------------------------------------------
# the tuner
# ---------------------------------------------------------------------------------------------------
def run_tuner_cases(d: Path) -> list[dict]:
    """``tune.py`` on a tiny synthetic file (2 trials of 2 epochs). Its config names MovieLens and the
    command line names the file, so a best.yaml that lost the command line trains on other data.

    * the best trial's config: ``train.py fit --config best.yaml`` must give the best trial's validation
      score again (accepted; else ``silently_wrong``);
    * an option setting a searched key, spelled four ways: refused in one line (exit 2);
    * the study's folder continued with another data file, another ``max_epochs``, another search space:
      refused in one line naming ``--out``; continued with the same settings: accepted, one more trial;
    * an error inside a trial (a sampled value the model refuses): one line naming the trial, exit 2, and
      no traceback, neither ours nor Optuna's log of the failed trial.
    """
    import logging

    import optuna

    from ncf.tuning import main as tune_main

    d.mkdir(parents=True, exist_ok=True)
    data = write_interactions(d / "tune.csv", n_users=16, n_items=30, per_user=9, seed=4)
    other = write_interactions(d / "tune_other.csv", n_users=16, n_items=30, per_user=9, seed=5)
    cfg = yaml.safe_load((REPO / "configs" / "gmf.yaml").read_text())
    cfg["trainer"].update(max_epochs=3, enable_progress_bar=False, enable_model_summary=False)
    cfg["trainer"]["logger"]["init_args"]["save_dir"] = str(d / "runs")
    for cb in cfg["trainer"]["callbacks"]:  # best.yaml's own run stays inside d
        cb["init_args"]["dirpath"] = str(d / "runs" / cb["init_args"]["dirpath"])
    cfg["model"]["network"]["init_args"]["factor"] = 4
    cfg["model"]["lr"] = 0.01
    cfg["data"].update(batch_size=64, num_eval_negatives=20)  # dataset: ml-100k, replaced on the command line
    (d / "tune.yaml").write_text(yaml.safe_dump(cfg))
    lr_cfg = d / "tune_lr.yaml"
    lr_cfg.write_text("model:\n  lr: 0.02\n")
    space, space2, bad = d / "space.yaml", d / "space2.yaml", d / "space_bad.yaml"
    space.write_text("model.lr: {type: float, low: 1.0e-3, high: 5.0e-2, log: true}\n"
                     "model.network.init_args.factor: {type: categorical, choices: [2, 4]}\n")
    space2.write_text("model.lr: {type: float, low: 1.0e-3, high: 5.0e-2, log: true}\n")
    bad.write_text("model.network.init_args.factor: {type: int, low: 0, high: 0}\n")
    study = d / "study"
    opts = ["--data.dataset", str(data), "--trainer.max_epochs", "2"]

    def tune(args: list[str], space_file: Path = space, out: Path = study) -> Outcome:
        return _call(tune_main, ["--config", str(d / "tune.yaml"), "--space", str(space_file), "--out", str(out), *args])

    def one_line(out: Outcome, words: str) -> str:
        """A refusal: exit 2, no traceback, the last line the error naming ``words``."""
        if out.traceback or out.code not in (0, 2):
            return "unhandled"
        if out.code == 0:
            return "silently_wrong"
        last = out.err.strip().splitlines()[-1] if out.err.strip() else ""
        return "ok" if last.startswith("error: ") and words in last else "unhandled"

    def trials() -> int:
        return len(optuna.load_study(study_name="tune", storage=f"sqlite:///{study / 'study.db'}").trials)

    rows = []

    def row(case: str, verdict: str, out: Outcome) -> None:
        rows.append({"kind": "tuner", "case": case, "verdict": verdict, "code": out.code,
                     "first_line": out.err.strip().splitlines()[-1][:160] if out.err.strip() else ""})

    out = tune(["--n-trials", "2", *opts])
    if out.traceback or out.code not in (0, 2):
        verdict = "unhandled"
    elif out.code != 0:
        verdict = "wrongly_refused"
    else:
        best = yaml.safe_load((study / "best.yaml").read_text())
        again = train(["fit", "--config", str(study / "best.yaml")])
        score = getattr(getattr(getattr(again.value, "trainer", None), "checkpoint_callback", None), "best_model_score", None)
        want = optuna.load_study(study_name="tune", storage=f"sqlite:///{study / 'study.db'}").best_value
        verdict = "ok" if (best["data"]["dataset"] == str(data) and best["trainer"]["max_epochs"] == 2
                           and score is not None and abs(float(score) - want) < 1e-5) else "silently_wrong"
    row("best.yaml reproduces the best trial", verdict, out)
    for extra in (["--model.network.factor", "4"], ["--model.network.init_args.factor=2"],
                  ["--model.network", "{class_path: ncf.models.GMF, init_args: {factor: 2}}"], ["--config", str(lr_cfg)]):
        out = tune(["--n-trials", "1", *opts, *extra], out=d / "collide")
        row("override of a searched key: " + " ".join(a for a in extra if not a.startswith("/")),
            one_line(out, "is searched by"), out)
    for name, args, space_file in (("other data", ["--data.dataset", str(other), "--trainer.max_epochs", "2"], space),
                                   ("other max_epochs", [*opts[:2], "--trainer.max_epochs", "1"], space),
                                   ("other search space", opts, space2)):
        out = tune(["--n-trials", "3", *args], space_file)
        verdict = one_line(out, "--out another folder")
        row(f"study folder continued with {name}", verdict if trials() == 2 else "silently_wrong", out)
    out = tune(["--n-trials", "3", *opts])
    row("study folder continued with the same settings",
        _expected("accept", out, lambda _: trials() == 3, None), out)
    seen: list[logging.LogRecord] = []
    catcher = logging.Handler()
    catcher.emit = seen.append
    logging.getLogger("optuna").addHandler(catcher)
    try:
        out = tune(["--n-trials", "1", *opts], bad, d / "failing")
    finally:
        logging.getLogger("optuna").removeHandler(catcher)
    verdict = one_line(out, "trial 0 failed")
    if verdict == "ok" and any(r.exc_info or "failed with parameters" in str(r.msg) for r in seen):
        verdict = "unhandled"  # Optuna's own report of the failure, with its traceback
    row("error inside a trial", verdict, out)
    return rows


# ---------------------------------------------------------------------------------------------------
# candidates and ids
# ---------------------------------------------------------------------------------------------------
def run_candidate_cases(d: Path, ref: Path, data: Path) -> list[dict]:
    """A user's candidates and the ids they are named by: ``predict`` and ``explain.py --top-n`` give one list
    with no item the user interacted with (held-out items included), a held-out item is ranked among the
    candidates plus itself, users dropped as too short leave the mapping, zero-padded ids keep their names,
    a paper split repeating a negative is refused, and so are conflicting ``explain.py`` options."""
    import pandas as pd

    d = d / "candidates"
    d.mkdir()
    rows = []

    def row(case: str, verdict: str, out: Outcome) -> None:
        rows.append({"kind": "candidates", "case": case, "verdict": verdict, "code": out.code,
                     "first_line": out.err.strip().splitlines()[-1][:160] if out.err.strip() else ""})

    raw = pd.read_csv(data, dtype=str)
    had = set(zip(raw["user"], raw["item"]))
    n = len(set(raw["item"]))  # more than any user's candidates: the whole lists must agree
    recs_path = d / "recs.csv"
    out = train(["predict", "--data.dataset", str(data), *FIT_SMALL, "--trainer.default_root_dir", str(d / "p"),
                 "--ckpt_path", str(ref), "--recommend.output", str(recs_path), "--recommend.top_n", str(n)])
    recs = pd.read_csv(recs_path, dtype=str) if out.code == 0 else None
    ok = recs is not None and not any(pair in had for pair in zip(recs["user_id"], recs["item_id"]))
    row("predict recommends no interacted item (held-out included)", _expected("accept", out, lambda _: ok, None), out)
    for user in ("u1", "u5"):
        ex = explain([str(ref), "--data", str(data), "--user", user, "--top-n", str(n), "--methods", "deeplift",
                      "--no-faithfulness", "--quiet", "--out", str(d / f"top_{user}")])
        got = json.loads((d / f"top_{user}" / "explanations.json").read_text())["checkpoints"][0]["pairs"] \
            if ex.code == 0 else []
        same = recs is not None and [p["item_id"] for p in got] == recs[recs.user_id == user]["item_id"].tolist()
        row(f"explain --top-n {user} equals predict", _expected("accept", ex, lambda _: same, None), ex)
    held = raw[raw.user == "u1"].sort_values("timestamp", key=lambda t: t.astype(int)).iloc[-1]["item"]  # test item
    ex = explain([str(ref), "--data", str(data), "--user", "u1", "--item", held, "--methods", "deeplift",
                  "--no-faithfulness", "--quiet", "--out", str(d / "held")])
    among = json.loads((d / "held" / "explanations.json").read_text())["checkpoints"][0]["pairs"][0]["candidates"] \
        if ex.code == 0 else None
    want = len(set(raw["item"])) - int((raw.user == "u1").sum()) + 1
    row("a held-out item is ranked among the candidates plus itself", _expected("accept", ex, lambda _: among == want,
                                                                                None), ex)

    # users too short for the split, dropped: gone from the mapping, from predict and from explain.py
    short = d / "short.csv"
    short.write_text(data.read_text() + "short1,m999,4,2000\nshort2,m1,3,2000\nshort2,m2,3,2001\n")
    fit = train(["fit", "--data.dataset", str(short), "--data.drop_short_users", "true", *FIT_SMALL,
                 "--trainer.default_root_dir", str(d / "short")])
    kept = getattr(getattr(fit.value, "datamodule", None), "interactions", None)
    row("drop_short_users drops them from the id mapping", _expected(
        "accept", fit, lambda _: kept is not None and not {"short1", "short2"} & set(kept.user_ids)
        and "m999" not in kept.item_ids, None), fit)
    ckpts = sorted((d / "short").rglob("*.ckpt"))
    if ckpts:
        pred = train(["predict", "--data.dataset", str(short), "--data.drop_short_users", "true", *FIT_SMALL,
                      "--trainer.default_root_dir", str(d / "short_p"), "--ckpt_path", str(ckpts[0]),
                      "--recommend.output", str(d / "short.csv.out.csv"), "--recommend.top_n", "3"])
        users = set(pd.read_csv(d / "short.csv.out.csv", dtype=str)["user_id"]) if pred.code == 0 else set()
        row("predict never recommends for a dropped user", _expected(
            "accept", pred, lambda _: bool(users) and not {"short1", "short2"} & users, None), pred)
        ex = explain([str(ckpts[0]), "--data", str(short), "--user", "short1", "--top-n", "2", "--quiet"])
        row("explain.py refuses a dropped user", _expected("refuse", ex, None, None), ex)

    # zero-padded ids with names: "0012" and "12" are two users, "007" keeps its name
    padded = d / "padded.csv"
    padded.write_text("user,item,timestamp\n" + "".join(
        f"{u},{i},{t}\n" for t, (u, i) in enumerate([("0012", "007"), ("0012", "8"), ("0012", "9"), ("12", "7"), ("12", "8"),
                                                    ("12", "9"), ("7", "007"), ("7", "7"), ("7", "8")])))
    names = d / "padded_items.csv"
    names.write_text("item,title\n007,Bond\n7,Seven\n")
    fit = train(["fit", "--data.dataset", str(padded), "--data.item_names", str(names), *FIT_SMALL,
                 "--data.num_eval_negatives", "1", "--trainer.default_root_dir", str(d / "padded")])
    inter = getattr(getattr(fit.value, "datamodule", None), "interactions", None)
    row("zero-padded ids stay distinct and keep their names", _expected(
        "accept", fit, lambda _: inter is not None and inter.user_ids == ["0012", "12", "7"]
        and inter.item_titles == ["Bond", "Seven", "8", "9"] and "duplicate" not in fit.err, None), fit)

    # a paper split whose negatives line repeats an item
    folder = d / "paper_repeat"
    folder.mkdir()
    (folder / "p.train.rating").write_text("0\t0\t5\t1\n0\t1\t5\t2\n1\t2\t5\t1\n1\t3\t4\t3\n")
    (folder / "p.test.rating").write_text("0\t2\t5\t9\n1\t0\t5\t9\n")
    (folder / "p.test.negative").write_text("(0,2)\t3\t4\n(1,0)\t4\t4\n")
    fit = train(["fit", "--data.dataset", str(folder / "p"), *FIT_SMALL, "--data.num_eval_negatives", "2",
                 "--trainer.default_root_dir", str(folder)])
    row("paper split with a repeated negative", _expected("refuse", fit, None, None), fit)

    # options that choose the pairs two ways
    (d / "pairs.csv").write_text("user,item\nu2,m3\n")
    for args in (["--user", "u1", "--item", "m3", "--top-n", "2"], ["--pairs", str(d / "pairs.csv"), "--user", "u1"]):
        ex = explain([str(ref), "--data", str(data), *args, "--quiet"])
        row("explain " + " ".join(a for a in args if not a.startswith("/")), _expected("refuse", ex, None, None), ex)
    return rows


# ---------------------------------------------------------------------------------------------------
# errors a user makes (typos, other separators, k-core options) and tracebacks a user could hit
# ---------------------------------------------------------------------------------------------------
def _error_verdict(out: Outcome, expect: str, says: str | tuple = "", check=None) -> str:
    """``refuse``: exit 2 with one ``error:`` line that contains ``says`` (each of them, a tuple); ``debug``: exit 2
    with the traceback;
    ``accept``: exit 0 and ``check(cli)`` true. A refusal in several lines, or without ``says``, is ``unclear``."""
    if expect == "debug":
        return "ok" if out.code == 2 and out.traceback else ("unhandled" if out.code not in (0, 2) else "unclear")
    if out.traceback or out.code not in (0, 2):
        return "unhandled"
    if expect == "refuse":
        if out.code != 2:
            return "silently_wrong"
        lines = [ln for ln in out.err.splitlines() if ln.startswith("error:")]
        return "ok" if len(lines) == 1 and all(w in lines[0] for w in (says if isinstance(says, tuple) else (says,))) \
            else "unclear"
    if out.code != 0:
        return "wrongly_refused"
    return "ok" if check is None or check(out.value) else "silently_wrong"


def run_error_cases(d: Path, ref: Path, data: Path) -> list[dict]:
    """Config-key typos (command line and YAML), a missing data file, --debug, names files with other
    separators, the k-core options, and the tracebacks a user could hit (other data's checkpoint, text that
    is not UTF-8, a monitor --model.k never logs, negative settings, sizes that cannot be allocated, weights
    that do not fit their hyperparameters). One small fit or explain each."""
    d = d / "errors"
    d.mkdir()
    fit = ["fit", "--data.dataset", str(data), *FIT_SMALL, "--trainer.default_root_dir", str(d / "r")]
    gmf = (REPO / "configs" / "gmf.yaml").read_text()
    typo = d / "typo.yaml"
    typo.write_text(gmf.replace("{factor: 64}", "{factr: 64}"))
    typo_line = 1 + next(k for k, ln in enumerate(typo.read_text().splitlines()) if "factr:" in ln)
    latin = d / "latin.csv"
    latin.write_bytes(data.read_text().replace("m1,", "caf\xe9,").encode("latin-1"))
    other = write_interactions(d / "other.csv", n_users=30, n_items=50, seed=3)
    items = sorted({ln.split(",")[1] for ln in data.read_text().splitlines()[1:]})
    names = {"colons.dat": "".join(f"{i}::Film {i}::a|b\n" for i in items),
             "pipes.item": "".join(f"{i}|Film {i}|01-Jan-1995||http://x|0|1\n" for i in items),
             "tabs.dat": "id\tname\turl\n" + "".join(f"{i}\tFilm {i}\thttp://x, y\n" for i in items)}
    for name, text in names.items():
        (d / name).write_text(text)

    def titled(cli) -> bool:
        inter = cli.datamodule.interactions
        return inter.item_titles == [f"Film {i}" for i in inter.item_ids]

    def k_core_holds(cli, k=3) -> bool:
        inter = cli.datamodule.interactions
        return len(inter) > 0 and int(np.bincount(inter.items).min()) >= k and int(np.bincount(inter.users).min()) >= k

    edited = torch.load(ref, weights_only=True)
    edited["hyper_parameters"]["network"]["init_args"]["factor"] = 8
    torch.save(edited, d / "edited.ckpt")
    cases = [
        ("cli key typo", train, fit + ["--model.network.factr", "16"], "refuse",
         ("--model.network.factr: unknown argument 'factr'", "did you mean --model.network.factor?"), None),
        ("yaml key typo", train, ["fit", "--config", str(typo), "--data.dataset", str(data), *FIT_SMALL[2:]], "refuse",
         (f"{typo}, line {typo_line}: model.network.init_args.factr: unknown argument 'factr'",
          "did you mean model.network.init_args.factor?"), None),
        ("unknown subcommand", train, ["fitt"], "refuse", "did you mean fit?", None),
        ("missing data file", train, ["fit", "--data.dataset", str(d / "missing.csv"), *FIT_SMALL], "refuse", "not found", None),
        ("missing data file --debug", train, ["fit", "--data.dataset", str(d / "missing.csv"), *FIT_SMALL, "--debug"],
         "debug", "", None),
        *[(f"names {name}", train, fit + ["--data.item_names", str(d / name)], "accept", "", titled) for name in names],
        ("names --data.names_sep", train, fit + ["--data.item_names", str(d / "colons.dat"), "--data.names_sep", "::"],
         "accept", "", titled),
        ("k-core 3", train, fit + ["--data.min_user_interactions", "3", "--data.min_item_interactions", "3"], "accept", "",
         k_core_holds),
        ("k-core negative", train, fit + ["--data.min_item_interactions", "-1"], "refuse", "--data.min_item_interactions",
         None),
        ("k-core leaves nothing", train, fit + ["--data.min_user_interactions", "1000"], "refuse", "leaves no interactions",
         None),
        ("test on other data", train, ["test", "--data.dataset", str(other), *FIT_SMALL, "--ckpt_path", str(ref)],
         "refuse", "was trained on other data", None),
        ("data not utf-8", train, ["fit", "--data.dataset", str(latin), *FIT_SMALL], "refuse", "not valid utf-8", None),
        ("--model.k 20 against monitor val_ndcg10", train,
         ["fit", "--config", str(REPO / "configs" / "gmf.yaml"), "--data.dataset", str(data), *FIT_SMALL[2:],
          "--model.k", "20", "--trainer.default_root_dir", str(d / "k")], "refuse", "val_ndcg20", None),
        ("max_epochs -5", train, fit + ["--trainer.max_epochs", "-5"], "refuse", "--trainer.max_epochs", None),
        ("split_seed -1", train, fit + ["--data.split_seed", "-1"], "refuse", "--data.split_seed", None),
        ("torch_threads -2", train, fit + ["--torch_threads", "-2"], "refuse", "--torch_threads", None),
        ("factor 1e10", train, fit + ["--model.network.factor", str(10 ** 10)], "refuse", "GiB", None),
        ("explain: weights do not fit", explain, [str(d / "edited.ckpt"), "--user", "u1", "--item", "m1", "--quiet"],
         "refuse", "user_embedding.weight is", None),
    ]
    rows = []
    for name, tool, argv, expect, says, check in cases:
        out = tool(argv)
        rows.append({"kind": "error", "case": name, "verdict": _error_verdict(out, expect, says, check), "code": out.code,
                     "first_line": out.err.strip().splitlines()[-1][:160] if out.err.strip() else ""})
    return rows


# ---------------------------------------------------------------------------------------------------
# crafted files
# ---------------------------------------------------------------------------------------------------
class _Payload:
    """Unpickling this (unsafely) creates the sentinel file: the test of whether code ran."""

    def __init__(self, sentinel: str):
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def run_crafted(d: Path, ref: Path, data: Path) -> list[dict]:
    rows = []
    sentinel = d / "PWNED"
    ck = torch.load(ref, weights_only=True)
    crafted = []
    for where in ("top", "hyper_parameters", "state_dict", "callbacks"):
        c = dict(ck)
        if where == "top":
            c["payload"] = _Payload(str(sentinel))
        else:
            c[where] = {**c[where], "payload": _Payload(str(sentinel))}
        path = d / f"pickle_{where}.ckpt"
        torch.save(c, path)
        crafted.append(path)
    # the same payload in a file that is only a pickle (legacy format)
    legacy = d / "pickle_legacy.ckpt"
    with open(legacy, "wb") as fh:
        torch.save({"payload": _Payload(str(sentinel))}, fh, _use_new_zipfile_serialization=False)
    crafted.append(legacy)
    consumers = {
        "explain": lambda p: explain([str(p), "--user", "u1", "--item", "m3", "--quiet", "--data", str(data)]),
        "fit_ckpt_path": lambda p: train(["fit", "--data.dataset", str(data), *FIT_SMALL,
                                          "--trainer.default_root_dir", str(d / "cr"), "--ckpt_path", str(p)]),
        "test_ckpt_path": lambda p: train(["test", "--data.dataset", str(data), *FIT_SMALL,
                                           "--trainer.default_root_dir", str(d / "cr"), "--ckpt_path", str(p)]),
        "predict_ckpt_path": lambda p: train(["predict", "--data.dataset", str(data), *FIT_SMALL,
                                              "--trainer.default_root_dir", str(d / "cr"), "--ckpt_path", str(p),
                                              "--recommend.output", str(d / "cr" / "rec.csv")]),
        "pretrained": lambda p: train(["fit", "--data.dataset", str(data), *NEUMF_SMALL, "--model.pretrained_gmf", str(p),
                                       "--model.pretrained_mlp", str(p), *FIT_SMALL[4:], "--trainer.default_root_dir",
                                       str(d / "cr")]),
    }
    for path in crafted:
        for consumer, run in consumers.items():
            out = run(path)
            refused = not sentinel.exists() and out.code == 2 and not out.traceback
            rows.append({"kind": "crafted", "case": f"{path.stem}/{consumer}", "refused": refused, "code": out.code})
            sentinel.unlink(missing_ok=True)
    rows += _path_steering(d, ck, data)
    return rows


def _path_steering(d: Path, ck: dict, data: Path) -> list[dict]:
    """Checkpoints that name folders and files outside the run: nothing there may be written, deleted or read."""
    victim = d / "victim"
    victim.mkdir()
    files = {"pairs_epoch=3.parquet": "someone else's", "dims_epoch=0.parquet": "x", "x_epoch=final.parquet": "y",
             "manifest.json": json.dumps({"format": "ncf-explain attribution record, version 1"}), "best.ckpt": "mine",
             "secret.csv": "user,item\nSECRET-CONTENT,1\n"}
    for name, text in files.items():
        (victim / name).write_text(text)
    before = {p.name: p.read_bytes() for p in victim.iterdir()}

    def intact():
        return {p.name: p.read_bytes() for p in victim.iterdir()} == before

    # a run whose resume point names the victim as its callback's folder and its ModelCheckpoint paths
    run = d / "steer"
    run.mkdir()
    cfg = trial_config(run, data, epochs=2)
    cwd = os.getcwd()
    os.chdir(run)  # the config's folders are relative to the working directory
    try:
        return _steer_run(d, run, cfg, victim, intact, data)
    finally:
        os.chdir(cwd)


def _steer_run(d: Path, run: Path, cfg: Path, victim: Path, intact, data: Path) -> list[dict]:
    rows = []
    out = train(["fit", "--config", str(cfg)])
    last = RUN(run, data) / "checkpoints" / "last.ckpt"
    if out.code != 0 or not last.exists():
        return [{"kind": "crafted", "case": "steer/setup", "refused": False, "code": out.code}]
    c = torch.load(last, weights_only=True)
    for key, state in c["callbacks"].items():
        if key.startswith("AttributionCallback"):
            state["out_dir"] = str(victim)
        if key.startswith("ModelCheckpoint"):
            state.update(best_model_path=str(victim / "best.ckpt"), last_model_path=str(victim / "best.ckpt"),
                         dirpath=str(victim), best_k_models={str(victim / "best.ckpt"): state.get("best_model_score")},
                         kth_best_model_path=str(victim / "best.ckpt"))
    torch.save(c, last)
    out = train(["fit", "--config", str(cfg), "--trainer.max_epochs", "3", "--ckpt_path", "last"])
    rows.append({"kind": "crafted", "case": "steer/callback_and_checkpoint_paths", "refused": intact() and not out.traceback,
                 "code": out.code})
    # explain.py given a checkpoint that names the victim's files as its data and names
    c = torch.load(last, weights_only=True)
    c["datamodule_hyper_parameters"].update(dataset=str(victim / "secret.csv"), root=str(victim),
                                            item_names=str(victim / "secret.csv"), user_names=str(victim / "secret.csv"))
    steered = d / "steer_data.ckpt"
    torch.save(c, steered)
    out = explain([str(steered), "--user", "u1", "--item", "m3", "--methods", "deeplift", "--no-faithfulness"])
    rows.append({"kind": "crafted", "case": "steer/explain_data_path",
                 "refused": intact() and "SECRET" not in out.out + out.err and not out.traceback, "code": out.code})
    # a checkpoint whose hyperparameters name pretrained files: test/fit with it never open them
    c = torch.load(last, weights_only=True)
    c["hyper_parameters"].update(pretrained_gmf=str(victim / "nothing-here.ckpt"),
                                 pretrained_mlp=str(victim / "nothing-here.ckpt"))
    torch.save(c, steered)
    for sub in ("test", "fit"):
        extra = ["--trainer.max_epochs", "4"] if sub == "fit" else []
        out = train([sub, "--config", str(cfg), "--ckpt_path", str(steered), *extra])
        # test runs it (its weights are intact); a resume refuses it (its stored settings were altered)
        want = 0 if sub == "test" else 2
        rows.append({"kind": "crafted", "case": f"steer/pretrained_paths_{sub}",
                     "refused": intact() and out.code == want and "nothing-here" not in out.err and not out.traceback,
                     "code": out.code})
    return rows


# ---------------------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=50, help="kill-and-resume trials")
    p.add_argument("--inputs", type=int, default=1000, help="at most this many bad inputs (the generated set is ~290)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench_out/reliability")
    p.add_argument("--only", nargs="+", choices=["data", "paper", "arguments", "candidates", "checkpoints", "errors", "tuner", "crafted"],
                   help="run only these groups of inputs (default: all, up to --inputs)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(a.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rng = random.Random(a.seed)
    # this process's temporary files go to a folder of its own (each child gets one too), checked at the end
    sys_tmp = out / "systemp"
    sys_tmp.mkdir()
    os.environ["TMPDIR"] = str(sys_tmp)
    tempfile.tempdir = str(sys_tmp)
    t0 = time.perf_counter()
    kills = kill_resume(out / "kills", a.kills, a.seed) if a.kills else {"kill_resume_trials": 0, "kill_resume_passed": 0}
    emit({**kills, "seconds": round(time.perf_counter() - t0, 1)})
    t1 = time.perf_counter()
    inputs_dir = out / "inputs"
    inputs_dir.mkdir()
    rows = []
    ref, data = _reference_checkpoint(inputs_dir)
    n_random = 12 if a.inputs >= 200 else 2
    only = set(a.only or ["data", "paper", "arguments", "candidates", "checkpoints", "errors", "tuner", "crafted"])
    if "data" in only:
        rows += run_data_cases(inputs_dir, rng, a.inputs)
    if "paper" in only:
        rows += run_paper_cases(inputs_dir)[: max(0, a.inputs - len(rows))]
    if "candidates" in only and len(rows) < a.inputs:
        rows += run_candidate_cases(inputs_dir, ref, data)[: a.inputs - len(rows)]
    if "arguments" in only:
        rows += run_argument_cases(inputs_dir, ref, data)[: max(0, a.inputs - len(rows))]
    if "checkpoints" in only and len(rows) < a.inputs:
        rows += run_checkpoint_cases(inputs_dir, rng, n_random)[: a.inputs - len(rows)]
    bad = [r for r in rows if r["verdict"] != "ok"]
    emit({"part": "bad_inputs", "bad_inputs": len(rows),
          "by_kind": {k: sum(r["kind"] == k for r in rows) for k in sorted({r["kind"] for r in rows})},
          "unhandled": sum(r["verdict"] == "unhandled" for r in rows),
          "silently_wrong": sum(r["verdict"] == "silently_wrong" for r in rows),
          "wrongly_refused": sum(r["verdict"] == "wrongly_refused" for r in rows), "not_ok": bad[:10],
          "seconds": round(time.perf_counter() - t1, 1)})
    (out / "bad_inputs.json").write_text(json.dumps(rows, indent=1))
    errors = run_error_cases(inputs_dir, ref, data) if "errors" in only else []
    emit({"part": "errors", "error_cases": len(errors), "error_cases_ok": sum(r["verdict"] == "ok" for r in errors),
          "not_ok": [r for r in errors if r["verdict"] != "ok"]})
    t2 = time.perf_counter()
    tuner = run_tuner_cases(out / "tuner") if "tuner" in only else []
    emit({"part": "tuner", "tuner_cases": len(tuner),
          **{k: sum(r["verdict"] == k for r in tuner) for k in ("unhandled", "silently_wrong", "wrongly_refused")},
          "not_ok": [r for r in tuner if r["verdict"] != "ok"], "seconds": round(time.perf_counter() - t2, 1)})
    (out / "tuner.json").write_text(json.dumps(tuner, indent=1))
    crafted = run_crafted(inputs_dir, ref, data) if "crafted" in only else []
    emit({"part": "crafted", "crafted_total": len(crafted), "crafted_refused": sum(r["refused"] for r in crafted),
          "not_refused": [r for r in crafted if not r["refused"]]})
    leaked = sorted(n for n in os.listdir(sys_tmp) if not n.startswith("torchinductor_"))  # torch's compile cache
    total = {"benchmark": "reliability", "kill_resume_trials": kills["kill_resume_trials"],
             "kill_resume_passed": kills["kill_resume_passed"], "bad_inputs": len(rows),
             "tuner_cases": len(tuner),
             "unhandled": sum(r["verdict"] == "unhandled" for r in rows + tuner + errors),
             "silently_wrong": sum(r["verdict"] == "silently_wrong" for r in rows + tuner + errors),
             "wrongly_refused": sum(r["verdict"] == "wrongly_refused" for r in rows + tuner + errors),
             "error_cases": len(errors), "error_cases_ok": sum(r["verdict"] == "ok" for r in errors),
             "crafted_refused": sum(r["refused"] for r in crafted), "crafted_total": len(crafted),
             "system_temp_leftovers": len(leaked),
             "seconds": round(time.perf_counter() - t0, 1)}
    emit(total)
    return total


if __name__ == "__main__":
    main()
