#!/usr/bin/env python3
"""Plexus end to end versus python-hl7's asyncio MLLP server, measured in the same run
with the same load generator.

Usage (from the repository root):
    cargo build --release -p plexus && pip install hl7 && python3 bench/compare.py

Options: --plexus PATH (default target/release/plexus), --messages N (default 60000),
--connections K (default 128), --destination-connections N (default 8), --rounds R
(default 5), --python-messages N (default a fifth of --messages, at least one per
connection), --reuse-instance (grant the plug-in `reuse-instance`: it keeps instances
between messages instead of a fresh one per message). Builds nothing itself. The
defaults are the figure quoted in bench/README.md.

What runs:
  1. `plexus bench --json`: an MLLP sink, the engine (one MLLP interface, the
     visit-status-map plug-in mapping SCH-25, the journal on: SQLite WAL with
     synchronous=FULL, delivery to the sink) and K connections, in one process.
  2. bench/python_mllp_server.py on a free port: python-hl7 parses each message, maps
     SCH-25 through a dict, answers an AA. No journal, no delivery: that flatters python.
  3. `plexus bench --target 127.0.0.1:PORT --json` against it: the same K connections,
     each sending one message at a time and waiting for its ACK.

Steps 1 and 3 alternate R times against one python server, each round starting with the
side the previous round ended with. Each round's ratio is Plexus's accepted (AA'd) msg/s
over python-hl7's in that round; the ratio reported is the median of the rounds' ratios,
since a machine's speed drifts between rounds. By default python-hl7 gets fewer messages
so that both runs of a round last a few seconds and see about the same machine (a rate
does not depend on the count once the connections are up). Both sides share the
machine's cores with the load generator.
"""
import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVER = REPO / "bench" / "python_mllp_server.py"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_bench(plexus, extra, messages, connections):
    cmd = [str(plexus), "--log", "warn", "bench", "--json",
           "--messages", str(messages), "--connections", str(connections), *extra]
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    # stderr (progress lines) passes through; stdout is the JSON report.
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if not done.stdout.strip():
        sys.exit(f"plexus bench failed (exit {done.returncode}) without a report")
    report = json.loads(done.stdout)
    if done.returncode != 0:
        print(f"warning: plexus bench exited {done.returncode}: "
              f"non-AA {report.get('non_aa_acks')}, missing {report.get('missing')}",
              file=sys.stderr)
    return report


def start_python_server(port):
    server = subprocess.Popen([sys.executable, str(SERVER), "--port", str(port)],
                              stdout=subprocess.PIPE, text=True)
    line = server.stdout.readline()  # "listening on PORT ..." once it accepts connections
    if not line.startswith("listening on"):
        server.kill()
        sys.exit(f"python server did not start: {line!r} (is python-hl7 installed? pip install hl7)")
    print(f"python server: {line.strip()}", file=sys.stderr)
    return server


def stop(server):
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def row(name, report, rate_key):
    lat = report["ack_latency_ms"] or {}
    return f"{name:<34}{report[rate_key]:>12.0f}{lat.get('p50', 0):>11.3f}{lat.get('p99', 0):>11.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plexus", default=str(REPO / "target" / "release" / "plexus"))
    ap.add_argument("--messages", type=int, default=60000)
    ap.add_argument("--connections", type=int, default=128)
    ap.add_argument("--destination-connections", type=int, default=8,
                    help="the engine's connections to its sink (order_by PID-3-1 when above 1)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="runs of each side, alternated; the ratio is the median of the rounds'")
    ap.add_argument("--python-messages", type=int, default=None,
                    help="messages for the python side (default: a fifth of --messages, "
                         "at least one per connection)")
    ap.add_argument("--reuse-instance", action="store_true",
                    help="grant the plug-in reuse-instance (instances kept between messages)")
    args = ap.parse_args()
    if not Path(args.plexus).exists():
        sys.exit(f"{args.plexus} not found: cargo build --release -p plexus")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.python_messages is None:
        python_messages = max(args.messages // 5, args.connections)
    elif args.python_messages < args.connections:
        ap.error("--python-messages must be at least --connections: python-hl7 is measured "
                 "over the same K connections")
    else:
        python_messages = args.python_messages

    port = free_port()
    server = start_python_server(port)
    rounds = []
    try:
        # Alternate the two sides: the machine's speed drifts from minute to minute, and a
        # round's two runs, a few seconds apart, see about the same machine. Each round
        # starts with the side the last one ended with, so neither side always runs first.
        for r in range(args.rounds):
            print(f"round {r + 1} of {args.rounds}", file=sys.stderr, flush=True)
            runs = {}
            sides = ["plexus", "python"] if r % 2 == 0 else ["python", "plexus"]
            for side in sides:
                if side == "plexus":
                    runs[side] = run_bench(
                        args.plexus,
                        ["--destination-connections", str(args.destination_connections)]
                        + (["--reuse-instance"] if args.reuse_instance else []),
                        args.messages, args.connections)
                else:
                    runs[side] = run_bench(args.plexus, ["--target", f"127.0.0.1:{port}"],
                                           python_messages, args.connections)
            plexus, python = runs["plexus"], runs["python"]
            rounds.append((plexus, python))
    finally:
        stop(server)

    print()
    print(f"{args.messages} messages to Plexus and {python_messages} to python-hl7 per round, "
          f"over {args.connections} connections, {rounds[0][0]['cores']} cores, "
          "one process per side plus the load generator")
    print("plug-in instances: " + ("kept between messages (reuse-instance granted)"
                                   if args.reuse_instance else "a fresh one per message"))
    ratios = []
    for r, (plexus, python) in enumerate(rounds, 1):
        ratio = plexus["accepted_per_second"] / python["accepted_per_second"]
        ratios.append(ratio)
        print()
        print(f"round {r}{'':<28}{'msg/s':>12}{'p50 ms':>11}{'p99 ms':>11}")
        print(row("plexus, ACKed (journal on)", plexus, "accepted_per_second"))
        e2e = plexus.get("end_to_end_ms") or {}
        print(f"{'plexus, delivered to the sink':<34}{plexus['delivered_per_second']:>12.0f}"
              f"{e2e.get('p50', 0):>11.3f}{e2e.get('p99', 0):>11.3f}")
        print(row("python-hl7 asyncio (no journal)", python, "accepted_per_second"))
        print(f"ratio plexus/python (ACKed msg/s): {ratio:.1f}x")
    print()
    if len(ratios) > 1:
        print("ratios by round: " + ", ".join(f"{x:.1f}x" for x in ratios))
    print(f"ratio plexus/python (ACKed msg/s), median of {len(ratios)} round(s): "
          f"{statistics.median(ratios):.1f}x")
    print("python-hl7 keeps no journal and delivers nothing; Plexus fsyncs each group of "
          "messages before ACKing and delivers every one.")
    failed = any(p["non_aa_acks"] or p.get("missing") or q["non_aa_acks"] for p, q in rounds)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
