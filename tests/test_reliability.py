"""The CI subset of ``benchmarks/reliability.py``: a few kills (inside checkpoint and record writes, and
at random times) with resume, a few dozen bad inputs, and every crafted file."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains through the CLI or several processes: pytest -m "not slow" skips it

REPO = Path(__file__).resolve().parents[1]


def _files(folder: Path) -> set:
    return {p for p in folder.rglob("*")} if folder.exists() else set()


def test_reliability_subset(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    before = _files(REPO / "runs")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "reliability.py"), "--kills", "2", "--inputs", "30",
                           "--seed", "1", "--out", str(tmp_path / "rel")], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parts = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    total = parts[-1]
    assert total["kill_resume_trials"] == 2 and total["kill_resume_passed"] == 2, parts[0]
    assert total["bad_inputs"] == 30 and total["unhandled"] == 0 and total["silently_wrong"] == 0, parts[1]
    assert total["crafted_total"] >= 29 and total["crafted_refused"] == total["crafted_total"], parts[2]
    assert total["system_temp_leftovers"] == 0
    assert total["tuner_cases"] >= 10  # tune.py's cases, counted in unhandled and silently_wrong above
    assert _files(REPO / "runs") == before  # nothing written outside its folder
