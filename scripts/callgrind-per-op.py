#!/usr/bin/env python3
"""Instructions per operation from callgrind output files, for the `--instructions` mode of the
benchmark scripts.

Throughput on the project's 2-core machine moves by ±10 % between runs; instruction counts do
not, so they tell whether a change made a contender cheaper. Each file is one contender's run;
its operations are counted as the calls of a function that runs once per operation in every
contender (`tokio_postgres::client::InnerClient::send` per statement, `rd_kafka_msg_new0` per
message), warm-up included, so every instruction of the profile is divided by every operation.

A profile taken with `--cache-sim=yes` also gives first-level instruction and data cache misses per
operation (callgrind's simulated caches, fixed sizes so runs compare across machines): the cost of a
path's code and data footprint, which instruction counts do not show.

Usage: callgrind-per-op.py --per-call FUNCTION --out FILE.json NAME=callgrind.out ...
"""

import argparse
import json
import re
import subprocess
import sys


def annotate(path):
    try:
        open(path).close()
    except OSError as e:
        sys.exit(f"callgrind-per-op.py: no profile at {path} ({e.strerror}); did valgrind run?")
    result = subprocess.run(
        ["callgrind_annotate", "--tree=calling", "--inclusive=yes", path],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def totals(text):
    """Every event's total, by callgrind's event name (Ir; with the cache simulation also I1mr,
    D1mr, D1mw and the last level's)."""
    events = re.search(r"^Events shown:\s+(.*)$", text, re.M)
    line = re.search(r"^(.*)PROGRAM TOTALS", text, re.M)
    if not events or not line:
        sys.exit("callgrind_annotate printed no PROGRAM TOTALS line")
    # Each total is printed with its share in brackets, except zeros, which may be bare.
    fields = re.sub(r"\([^)]*\)", " ", line.group(1)).split()
    values = [0 if v == "." else int(v.replace(",", "")) for v in fields]
    return dict(zip(events.group(1).split(), values))


# callgrind's cache events and the JSON keys they are reported under, per operation.
CACHE_EVENTS = [
    ("I1mr", "instruction_cache_misses_per_op"),
    ("D1mr", "data_read_misses_per_op"),
    ("D1mw", "data_write_misses_per_op"),
]


def calls_of(text, function):
    pattern = re.compile(r"=> .*" + re.escape(function) + r" \(([\d,]+)x\)")
    counts = [int(m.group(1).replace(",", "")) for m in pattern.finditer(text)]
    if not counts:
        sys.exit(f"no calls of {function} in the profile: did the contender run?")
    return max(counts)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-call", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("runs", nargs="+", help="NAME=callgrind.out")
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        name, path = run.split("=", 1)
        text = annotate(path)
        events = totals(text)
        ops = calls_of(text, args.per_call)
        row = {"name": name, "instructions": events["Ir"], "operations": ops,
               "instructions_per_op": round(events["Ir"] / ops)}
        for event, key in CACHE_EVENTS:
            if event in events:
                row[key] = round(events[event] / ops, 1)
        rows.append(row)
    cache = [(event, key) for event, key in CACHE_EVENTS if all(key in row for row in rows)]
    print("| contender | instructions | operations | instructions per operation |"
          + "".join(f" {key.replace('_', ' ')} |" for _, key in cache))
    print("|---|---:|---:|---:|" + "---:|" * len(cache))
    for row in rows:
        print(f"| {row['name']} | {row['instructions']:,} | {row['operations']:,} | {row['instructions_per_op']:,} |"
              + "".join(f" {row[key]:,} |" for _, key in cache))
    with open(args.out, "w") as out:
        json.dump({"tool": "callgrind", "results": rows}, out, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
