# callgrind's options shared by the benches' --instructions modes: sourced, not run.
#
# BENCH_CACHE_SIM=1 adds callgrind's cache simulation, so the per-operation table also gives
# first-level instruction and data cache misses (scripts/callgrind-per-op.py). The caches are
# fixed, not the host's, so runs on different machines compare: 32 KiB 8-way first-level
# instruction and data caches and a 1 MiB 16-way last level with 64-byte lines, near the
# per-core caches of the project's 2-core machines (their first-level data caches are 32 or
# 48 KiB). A path's misses there are the cost of its code and data footprint, which its
# instruction count does not show. About three times slower.
callgrind_cache_args() {
    if [[ ${BENCH_CACHE_SIM:-0} == 1 ]]; then
        echo "--cache-sim=yes --I1=32768,8,64 --D1=32768,8,64 --LL=1048576,16,64"
    fi
}
