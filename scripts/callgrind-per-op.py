#!/usr/bin/env python3
"""Instructions per operation from callgrind output files, for the `--instructions` mode of the
benchmark scripts.

Throughput on the project's 2-core machine moves by ±10 % between runs; instruction counts do
not, so they tell whether a change made a contender cheaper. Each file is one contender's run;
its operations are counted as the calls of a function that runs once per operation in every
contender (`tokio_postgres::client::InnerClient::send` per statement, `rd_kafka_msg_new0` per
message), warm-up included, so every instruction of the profile is divided by every operation.

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


def total(text):
    match = re.search(r"^\s*([\d,]+) \([^)]*\)\s+PROGRAM TOTALS", text, re.M)
    if not match:
        sys.exit("callgrind_annotate printed no PROGRAM TOTALS line")
    return int(match.group(1).replace(",", ""))


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
        instructions = total(text)
        ops = calls_of(text, args.per_call)
        rows.append({"name": name, "instructions": instructions, "operations": ops,
                     "instructions_per_op": round(instructions / ops)})
    print("| contender | instructions | operations | instructions per operation |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['name']} | {row['instructions']:,} | {row['operations']:,} | {row['instructions_per_op']:,} |")
    with open(args.out, "w") as out:
        json.dump({"tool": "callgrind", "results": rows}, out, indent=2)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
