#!/usr/bin/env python3
"""Measure python-hl7 parse throughput on a folder of HL7 v2 messages.

Usage:
    python3 bench/python_hl7_parse.py [CORPUS_DIR] [--parse-encode] [--min-seconds S]

CORPUS_DIR defaults to ../shared/corpus/hl7v2 relative to the repository root.
Every *.hl7 file in it is one message. The script prints one JSON line, for
example:

    {"tool": "python-hl7", "version": "0.4.5", "mode": "parse", "messages": 139,
     "bytes": 250000, "passes": 40, "seconds": 2.01, "msgs_per_sec": ..., "mb_per_sec": ...}

"messages" and "bytes" describe one pass over the corpus. "bytes" is the UTF-8
size of the text handed to python-hl7, after the preparation below. "passes" is
the number of timed passes over the corpus, and the rates cover all of them
(MB = 10**6 bytes). With --parse-encode, each step is str(hl7.parse(msg)),
which parses the message and serialises it again.

Requires python-hl7 (`pip install hl7`).
"""
import argparse
import json
import sys
import time
from pathlib import Path

try:
    import hl7
except ImportError:
    sys.exit("python-hl7 is not installed: pip install hl7")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO_ROOT / ".." / "shared" / "corpus" / "hl7v2"
UTF8_BOM = b"\xef\xbb\xbf"


def load_corpus(folder):
    """Read every *.hl7 file into text that python-hl7 can parse.

    python-hl7's parse() splits segments on '\\r' only. A file that uses LF or
    CR LF between segments would come out as one long segment (the corpus uses
    LF throughout). So CR LF and LF become CR here, and a UTF-8 BOM (27 corpus
    files start with one) is removed before decoding. This runs once, before
    any timing, so the timed loop measures only python-hl7.
    """
    paths = sorted(Path(folder).glob("*.hl7"))
    messages = []
    for path in paths:
        raw = path.read_bytes()
        if raw.startswith(UTF8_BOM):
            raw = raw[len(UTF8_BOM):]
        text = raw.decode("utf-8")
        text = text.replace("\r\n", "\r").replace("\n", "\r")
        messages.append(text)
    return messages


def parse_only(messages):
    parse = hl7.parse
    for msg in messages:
        parse(msg)


def parse_encode(messages):
    parse = hl7.parse
    for msg in messages:
        str(parse(msg))


def main(argv=None):
    ap = argparse.ArgumentParser(description="python-hl7 parse throughput")
    ap.add_argument("corpus", nargs="?", default=str(DEFAULT_CORPUS),
                    help="folder of *.hl7 files (default: %(default)s)")
    ap.add_argument("--parse-encode", action="store_true",
                    help="time str(hl7.parse(msg)) instead of hl7.parse(msg)")
    ap.add_argument("--min-seconds", type=float, default=2.0,
                    help="keep repeating whole passes until this much time has passed (default: %(default)s)")
    args = ap.parse_args(argv)

    messages = load_corpus(args.corpus)
    if not messages:
        sys.exit("no *.hl7 files in %s" % args.corpus)
    total_bytes = sum(len(m.encode("utf-8")) for m in messages)
    step = parse_encode if args.parse_encode else parse_only

    # One untimed pass: warms caches and fails early on a message python-hl7 rejects.
    step(messages)

    passes = 0
    start = time.perf_counter()
    while True:
        step(messages)
        passes += 1
        elapsed = time.perf_counter() - start
        if elapsed >= args.min_seconds:
            break

    result = {
        "tool": "python-hl7",
        "version": getattr(hl7, "__version__", "unknown"),
        "mode": "parse+encode" if args.parse_encode else "parse",
        "messages": len(messages),
        "bytes": total_bytes,
        "passes": passes,
        "seconds": round(elapsed, 6),
        "msgs_per_sec": round(len(messages) * passes / elapsed, 1),
        "mb_per_sec": round(total_bytes * passes / elapsed / 1e6, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
