"""``python explain.py report FOLDER...``: one self-contained HTML report from attribution records.

Each FOLDER is a record (an ``attributions/`` folder), a run folder holding one, or any folder above runs (e.g.
``runs/<dataset>/``): every record beneath it is found, except superseded runs' records. One record
gives a run's report; several give the pipeline view (stages on one time axis; runs that form no pipeline
compared on one epoch axis) and a section per run. The records are only read (a run still training keeps
writing its own); the page is the one file written, into the record when one is given without ``--out``.

    python explain.py report runs/ml-100k/neumf_pretrained    # -> runs/ml-100k/neumf_pretrained/attributions/report.html
    python explain.py report runs/ml-100k --out pipeline.html --open
"""
from __future__ import annotations

import argparse
import os
import sys
import webbrowser
from pathlib import Path
from typing import Optional, Sequence

from .html_report import write_report
from .record import Record, is_record

__all__ = ["find_records", "main", "ReportError"]


class ReportError(Exception):
    """Bad input: printed as one line and exit code 2."""


def find_records(path: str | os.PathLike) -> list[Path]:
    """The record folders at or under ``path`` (a superseded run's record is skipped), sorted."""
    p = Path(path)
    if not p.exists():
        raise ReportError(f"{p}: no such folder.")
    if not p.is_dir():
        raise ReportError(f"{p} is a file; give a run folder or its attributions/ folder.")
    if is_record(p):
        return [p]
    found, unreadable = [], []
    for root, dirs, files in os.walk(p):
        dirs[:] = sorted(d for d in dirs if d != "superseded" and not d.startswith("."))
        if "manifest.json" in files:
            if is_record(root):
                found.append(Path(root))
                dirs[:] = []
            else:
                unreadable.append(Path(root) / "manifest.json")
    if not found and unreadable:
        raise ReportError(f"{unreadable[0]} is not a readable ncf-explain manifest (damaged, or another tool's "
                          f"file); give the folder of an intact record.")
    if not found:
        raise ReportError(f"{p} is not an attribution record and holds none (no ncf-explain manifest.json beneath it); "
                          f"give the folder of a run trained with explain.AttributionCallback.")
    return sorted(found)


def _dataset_of(record: Path):
    """The dataset a record's run trained on, as its manifest names it (as a folder name: runs/<dataset>/)."""
    import json

    from ncf.run_folders import dataset_label

    try:
        dataset = json.loads((record / "manifest.json").read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        return None
    return dataset_label(dataset) if dataset else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="explain.py report", description="Write the HTML report of attribution records.")
    p.add_argument("folders", nargs="+", help="record folders, run folders, or folders above them (e.g. runs/)")
    p.add_argument("--out", help="the HTML file (default: report.html in the record, or in the common folder of several)")
    p.add_argument("--title", help="the page's title")
    p.add_argument("--open", action="store_true", help="open the report in the default web browser")
    return p


def run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    records: list[Path] = []
    for f in args.folders:
        records += [r for r in find_records(f) if r not in records]
    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise ReportError(f"--out {out} is a folder; give the HTML file to write, e.g. {out / 'report.html'}.")
        if out.suffix.lower() not in (".html", ".htm"):
            raise ReportError(f"--out {out}: the report is an HTML page; give a file ending in .html (e.g. "
                              f"{out.with_suffix('.html')}), so that no data file is written over.")
    elif len(records) == 1:
        out = records[0] / "report.html"
    else:
        out = Path(os.path.commonpath([str(r.resolve()) for r in records])) / "report.html"
    by_dataset: dict[str, list[Path]] = {}
    for r in records:
        by_dataset.setdefault(str(_dataset_of(r)), []).append(r)
    if len(by_dataset) > 1:  # a pipeline view is one dataset's stages; runs keep datasets apart (runs/<dataset>/)
        which = "; ".join(f"{d}: {', '.join(str(r) for r in rs[:2])}{f' and {len(rs) - 2} more' if len(rs) > 2 else ''}"
                          for d, rs in sorted(by_dataset.items()))
        first = sorted(by_dataset)[0]
        mine = by_dataset[first]
        common = Path(os.path.commonpath([str(r.resolve()) for r in mine]))
        others = [r for d, rs in by_dataset.items() if d != first for r in rs]
        # the folder that holds this dataset's records and no other's (runs/<dataset>), else the records
        shown = str(common) if len(mine) > 1 and not any(common in r.resolve().parents for r in others) else \
            " ".join(str(r) for r in mine)
        raise ReportError(f"the records given are of {len(by_dataset)} datasets ({which}); report one dataset's runs "
                          f"at a time, e.g. explain.py report {shown}.")
    loaded, damaged = [], {}
    for r in records:
        try:
            loaded.append(Record.read(r))
        except (OSError, ValueError) as err:  # a truncated or foreign file in the record (pyarrow's errors too)
            damaged[r] = (f"{r}: a file of the record cannot be read ({' '.join(str(err).split())[:160]}); the record "
                          f"is damaged (its writes are atomic, so the file was changed afterwards); train the run "
                          f"again to record it")
    named = {Path(f).resolve() for f in args.folders}
    if damaged and (not loaded or any(r.resolve() in named for r in damaged)):
        first = next(iter(damaged.values()))
        raise ReportError(first + (f" ({len(damaged) - 1} more damaged)" if len(damaged) > 1 else "") + ".")
    for d in damaged.values():  # found inside a folder given: the other records are still reported
        print(f"warning: left out {d}.", file=sys.stderr)
    partial = [str(r.folder) for r in loaded if r.partial]
    path = write_report(loaded, out, args.title)
    note = f" ({len(partial)} partial: {', '.join(partial)})" if partial else ""
    left = f", {len(damaged)} left out (damaged)" if damaged else ""
    print(f"wrote {path} from {len(loaded)} record{'s' if len(loaded) > 1 else ''}{note}{left}")
    for r in loaded:
        if r.missing_epochs:
            print(f"warning: {r.folder} lacks the files of epoch{'s' * (len(r.missing_epochs) > 1)} "
                  f"{', '.join(map(str, r.missing_epochs))} (its manifest lists them as recorded); the report reads "
                  f"the epochs left, so its figures differ from the run's. Restore the files, or train the run again.",
                  file=sys.stderr)
    if args.open:
        webbrowser.open(path.resolve().as_uri())
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[2:] if argv is None else argv)
    try:
        return run(argv)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
