#!/usr/bin/env python3
"""Plexus HL7 parser versus python-hl7, measured in the same run on the same corpus.

Usage:
    python3 bench/hl7_vs_python.py [--quick]

Runs the criterion benchmark `cargo bench -p plexus-hl7 --bench parse`, reads its mean
times from target/criterion, runs bench/python_hl7_parse.py (installing python-hl7 with
pip if it is missing), and prints both with the ratios. --quick shortens criterion's
measurement (3 s per benchmark instead of its default) for a smoke run.

Rows compared:
  parse         Plexus parse (index segments and fields)   vs hl7.parse(msg)
  parse_encode  Plexus parse + bytes to send               vs str(hl7.parse(msg))
  parse_walk    Plexus parse + decode every leaf value     vs hl7.parse(msg)
python-hl7 builds its whole tree while parsing; Plexus indexes up front and decodes a
value when asked, so parse_walk is the like-for-like "every value touched" figure.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / ".." / "shared" / "corpus" / "hl7v2"


def ensure_python_hl7():
    try:
        import hl7  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "hl7"], check=True)


def criterion(quick):
    cmd = ["cargo", "bench", "-p", "plexus-hl7", "--bench", "parse", "--", "--noplot"]
    if quick:
        cmd += ["--warm-up-time", "1", "--measurement-time", "3"]
    subprocess.run(cmd, cwd=REPO, check=True)
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          cwd=REPO, check=True, capture_output=True, text=True).stdout
    target = Path(json.loads(meta)["target_directory"])
    out = {}
    for name in ["parse", "parse_encode", "parse_walk", "parse_set_encode"]:
        est = json.loads((target / "criterion" / "corpus" / name / "new" / "estimates.json").read_text())
        out[name] = est["mean"]["point_estimate"] / 1e9  # seconds per pass over the corpus
    return out


def corpus_stats():
    files = sorted(CORPUS.glob("*.hl7"))
    return len(files), sum(f.stat().st_size for f in files)


def python_hl7(mode_flag):
    cmd = [sys.executable, str(REPO / "bench" / "python_hl7_parse.py"), str(CORPUS)] + mode_flag
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    ensure_python_hl7()
    rust = criterion(args.quick)
    messages, size = corpus_stats()
    py_parse = python_hl7([])
    py_encode = python_hl7(["--parse-encode"])

    print()
    print(f"corpus: {messages} messages, {size} bytes ({CORPUS.resolve()})")
    print(f"{'benchmark':<18}{'Plexus MB/s':>13}{'Plexus msg/s':>15}{'python-hl7 msg/s':>19}{'ratio':>9}")
    rows = [("parse", py_parse), ("parse_encode", py_encode), ("parse_walk", py_parse), ("parse_set_encode", None)]
    for name, py in rows:
        secs = rust[name]
        mbs = size / secs / 1e6
        msgs = messages / secs
        ratio = f"{msgs / py['msgs_per_sec']:.0f}x" if py else "-"
        py_rate = f"{py['msgs_per_sec']:.0f}" if py else "-"
        print(f"{name:<18}{mbs:>13.1f}{msgs:>15.0f}{py_rate:>19}{ratio:>9}")
    print(f"python-hl7 {py_parse['version']}: parse {py_parse['mb_per_sec']:.2f} MB/s, "
          f"parse+str {py_encode['mb_per_sec']:.2f} MB/s")


if __name__ == "__main__":
    main()
