#!/usr/bin/env python3
"""librdkafka's own producer loop, `examples/rdkafka_performance.c`, as a contender of
`scripts/bench-kafka.sh`: the same messages and settings as the bench binary's contenders,
results in the same JSON shape (contender `rdkafka-performance`), appended to a pass's file.

The tool is librdkafka's C example, compiled by bench-kafka.sh with gcc against the static
librdkafka that rdkafka-sys built for the bench binary (same version, same build flags), so no
Rust, no future and no callback of ours runs. It produces with `rd_kafka_produce` from one
buffer that librdkafka references (no copy), and serves delivery reports with `rd_kafka_poll(0)`
every 1,000 messages on its one thread. Its latency mode (`-l`) is left off: it stamps every
payload with `snprintf` and writes every latency with `fprintf`, ~2,500 instructions a message
of the tool's own bookkeeping (callgrind), which would make it a weaker anchor than the bench
binary's; so this row has throughput and CPU, no latency.
Differences from the bench binary's loop, stated in docs/performance.md: no message key (the
sticky partitioner fills one partition's batch at a time; the Rust contenders key every
message and spread it over three), the window is librdkafka's own queue limit
(`queue.buffering.max.messages`, set to the same 50,000), and the tool has no warm-up: its
clock starts at the first produce, before the connection and (with idempotence) the producer
id, about a second. So the rate here runs from the tool's first stats row (every 50 ms) with a
full window delivered to its last; CPU time is the whole process's, start-up included.

Usage: rdkafka-performance.py --tool PATH --tansu PATH --bootstrap HOST:PORT --allocator NAME
       --messages N --rounds N --linger-ms N --window N --append FILE.json [-- WRAPPER...]
WRAPPER (e.g. `env LD_PRELOAD=...`) runs before the tool, as bench-kafka.sh's allocators do.
"""

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
import uuid

# The tool's final table row (`-u`): elapsed ms, msgs, bytes, rtt, dr, dr_m/s, ...
ROW = re.compile(r"^\|\s*(\d+) \|\s*(\d+) \|\s*(\d+) \|\s*(\d+) \|\s*(\d+) \|\s*(\d+) \|\s*[\d.]+ \|\s*(\d+) \|")


def tansu(args, tool, bootstrap):
    subprocess.run([tool, "topic", *args[:1], "--broker", f"tcp://{bootstrap}", *args[1:]],
                   check=True, capture_output=True)


def one_run(args, idempotence, wrapper):
    topic = f"onex-test-bench-c-{uuid.uuid4().hex}"
    tansu(["create", "--partitions", "3", topic], args.tansu, args.bootstrap)
    try:
        command = [
            *wrapper, args.tool, "-P", "-q", "-u",
            "-i", "50", "-t", topic, "-b", args.bootstrap, "-s", "100", "-c", str(args.messages), "-a", "-1",
            "-X", f"enable.idempotence={'true' if idempotence else 'false'}",
            "-X", f"linger.ms={args.linger_ms}",
            "-X", "message.timeout.ms=30000",
            "-X", f"queue.buffering.max.messages={args.window}",
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        wall = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            sys.exit(f"rdkafka-performance.py: the tool failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        rows = [m for m in map(ROW.match, done.stdout.splitlines()) if m]
        if not rows:
            sys.exit(f"rdkafka-performance.py: no result row in the tool's output:\n{done.stdout}")
        table = [tuple(map(int, m.groups())) for m in rows]
        elapsed_ms, _msgs, _bytes, _rtt, delivered, _rate, dr_err = table[-1]
        if delivered != args.messages or dr_err != 0:
            sys.exit(f"rdkafka-performance.py: {delivered} of {args.messages} delivered, {dr_err} failed")
        # After the start-up: from the first row with a full window delivered (half the
        # messages in a run shorter than two windows, a smoke test).
        skip = min(args.window, args.messages // 2)
        start = next((r for r in table if r[4] >= skip and r[0] < elapsed_ms), None)
        measured = "after-first-window"
        if start is None:
            # Too short a run for a row between start-up and end: the whole run, said so.
            start, measured = (0, 0, 0, 0, 0, 0, 0), "whole-run"
        rate = (delivered - start[4]) * 1000.0 / (elapsed_ms - start[0])
    finally:
        try:
            tansu(["delete", topic], args.tansu, args.bootstrap)
        except subprocess.CalledProcessError:
            pass  # The broker forgets topics when it stops; a leftover costs memory only.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "msgs_per_sec": rate,
        "measured_from_ms": start[0],
        "measured": measured,
        # The tool's clock starts at its first produce; wall time includes connecting.
        "elapsed_ms": elapsed_ms,
        "wall_s": wall,
        "client_cpu_us_per_msg": cpu * 1e6 / args.messages,
    }


def main():
    parser = argparse.ArgumentParser()
    for flag in ("--tool", "--tansu", "--bootstrap", "--allocator", "--append"):
        parser.add_argument(flag, required=True)
    for flag in ("--messages", "--rounds", "--linger-ms", "--window"):
        parser.add_argument(flag, type=int, required=True)
    parser.add_argument("wrapper", nargs="*")
    args = parser.parse_args()
    outcomes = json.load(open(args.append)) if os.path.exists(args.append) else []
    for idempotence in (False, True):
        runs = []
        for round_ in range(max(1, args.rounds)):
            run = one_run(args, idempotence, args.wrapper)
            print(f"round {round_} rdkafka-performance idempotence={str(idempotence).lower():<5} "
                  f"{run['msgs_per_sec']:>10.0f} msgs/s {run['client_cpu_us_per_msg']:>6.2f} µs CPU/msg", file=sys.stderr)
            runs.append(run)
        runs.sort(key=lambda r: r["msgs_per_sec"])
        middle = runs[len(runs) // 2]
        settings = (f"messages={args.messages} bytes=100 acks=all idempotence={str(idempotence).lower()} "
                    f"linger.ms={args.linger_ms} window={args.window} partitions=3 allocator={args.allocator} "
                    f"producers=1 tool=rdkafka_performance key=none measured={middle['measured']} "
                    f"rounds={len(runs)} (median)")
        # The same shape as the bench binary's outcomes; per-round ratios need the binary's
        # rounds, which this tool does not share, so they are left out.
        outcomes.append({
            "name": "rdkafka-performance",
            "allocator": args.allocator,
            "settings": settings,
            "messages_per_request": 1,
            "msgs_per_sec": middle["msgs_per_sec"],
            "vs_base_producer_per_round": None,
            "vs_raw_per_round": None,
            "client_cpu_us_per_msg": middle["client_cpu_us_per_msg"],
            "context_switches_per_1k_msgs": None,
            # Left out, not zero: the tool's latency mode is off (see above).
            "message_p50_ms": None,
            "message_p99_ms": None,
            "vs_untraced_per_round": None,
            "spans_exported": None,
            "spans_dropped": None,
        })
        print(f"| rdkafka-performance | 1 | {str(idempotence).lower()} | {middle['msgs_per_sec']:.0f} | - | - | "
              f"{middle['client_cpu_us_per_msg']:.2f} | - | - | - |")
    json.dump(outcomes, open(args.append, "w"), indent=2)


if __name__ == "__main__":
    main()
