#!/usr/bin/env bash
# `vmimage batch` side by side (issue 19; docs/benchmarks.md, "Speed: batch"):
#  1. 64 files of 64 MiB, warm in the page cache, `batch --op hash -j JOBS` against one
#     `vmimage hash` of one of them: aggregate MB/s over single-stream MB/s, with the default
#     digests (md5 + sha512: one `hash` already uses two threads) and with `--algo md5` (one
#     thread per file).
#  2. 100,000 tiny files: `batch --algo md5 -j 2` against `find | xargs -P2 md5sum`.
#  3. Peak RSS (/usr/bin/time -v) of `batch` over 1,000, 10,000 and 100,000 tiny files.
# Medians of ROUNDS runs (default 5), interleaved.
#
#   benches/batch-side-by-side.sh [WORKDIR]    (default: a new directory under /tmp, removed)
#
# Needs about 4.2 GiB of disk and of page cache, GNU time and coreutils.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet
bin=$PWD/target/release/vmimage
rounds=${ROUNDS:-5}
jobs=${JOBS:-2}
if [ $# -ge 1 ]; then
    work=$1
    mkdir -p "$work"
else
    work=$(mktemp -d /tmp/vmimage-batch-bench.XXXXXX)
    trap 'rm -rf "$work"' EXIT
fi
cd "$work"

# seconds COMMAND...: wall time of one run, output discarded.
seconds() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"

if [ ! -d big ]; then
    mkdir big
    for i in $(seq -w 1 64); do head -c 64M /dev/urandom >big/f$i; done
fi
cat big/* >/dev/null
for algo in md5,sha512 md5; do
    : >one.txt
    : >batch.txt
    for _ in $(seq "$rounds"); do
        seconds "$bin" hash --algo "$algo" big/f01 >>one.txt
        seconds "$bin" batch --manifest big --algo "$algo" -j "$jobs" --out batch.jsonl >>batch.txt
    done
    o=$(median <one.txt)
    b=$(median <batch.txt)
    single_rate=$(echo "64 / $o" | bc -l)
    batch_rate=$(echo "4096 / $b" | bc -l)
    printf 'hash %-10s one file (64 MiB): %.3f s = %.0f MiB/s; batch of 64 (4 GiB, -j %s): %.2f s = %.0f MiB/s; ratio %.2fx\n' \
        "$algo" "$o" "$single_rate" "$jobs" "$b" "$batch_rate" "$(echo "$batch_rate / $single_rate" | bc -l)"
done

if [ ! -d tiny ]; then
    mkdir tiny
    python3 - <<'PY'
import os
for i in range(100_000):
    d = f"tiny/{i // 1000:03d}"
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    with open(f"{d}/{i:06d}", "wb") as f:
        f.write(os.urandom(64 + i % 512))
PY
fi
find tiny -type f | xargs cat >/dev/null
: >xargs.txt
: >tinybatch.txt
for _ in $(seq "$rounds"); do
    seconds sh -c "find tiny -type f | xargs -P2 md5sum" >>xargs.txt
    seconds "$bin" batch --manifest tiny --algo md5 -j "$jobs" --out tiny.jsonl >>tinybatch.txt
done
x=$(median <xargs.txt)
t=$(median <tinybatch.txt)
printf 'tiny files (100,000): xargs -P2 md5sum %.2f s; batch --algo md5 -j %s %.2f s; batch throughput = %.0f %% of xargs\n' \
    "$x" "$jobs" "$t" "$(echo "100 * $x / $t" | bc -l)"

for n in 1000 10000 100000; do
    head -n "$n" <(find tiny -type f | sort) | sed 's/.*/{"id": "&", "source": "&"}/' >"m$n.jsonl"
    rss=$(/usr/bin/time -v "$bin" batch --manifest "m$n.jsonl" --source-dir . --algo md5 -j "$jobs" --out r.jsonl 2>&1 |
        awk -F: '/Maximum resident/ {gsub(/ /, "", $2); print $2}')
    echo "peak RSS, $n items (JSON Lines manifest): $rss KiB"
done
rss=$(/usr/bin/time -v "$bin" batch --manifest tiny --algo md5 -j "$jobs" --out r.jsonl 2>&1 |
    awk -F: '/Maximum resident/ {gsub(/ /, "", $2); print $2}')
echo "peak RSS, 100000 items (directory manifest: the sorted names are held): $rss KiB"
