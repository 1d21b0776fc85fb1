#!/usr/bin/env bash
# Times `vmimage hash` (md5 + sha512, the default) against the peer tools on one warm file, in
# one run, interleaved, and prints medians and the ratios issue 3 names.
#
#   benches/hash-side-by-side.sh [FILE] [REPETITIONS]
#
# FILE defaults to a 2 GiB file of random bytes made under /tmp (and deleted at the end);
# REPETITIONS defaults to 5. The file is read once before timing so that every tool reads it
# from the page cache. Tools: vmimage hash; md5sum then sha512sum; rhash --md5 --sha512;
# openssl dgst -md5; openssl dgst -sha512. Runs are interleaved (one of each per round) so
# that a change in machine load hits every tool alike; the medians are over the rounds.
# Needs: cargo, coreutils, openssl, rhash (apt-get install rhash), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

reps=${2:-5}
made=""
if [[ $# -ge 1 && -n "$1" ]]; then
    file=$1
else
    file=$(mktemp /tmp/vmimage-hash-bench.XXXXXX)
    made=$file
    echo "making a 2 GiB file of random bytes at $file" >&2
    head -c $((2 << 30)) /dev/urandom >"$file"
fi
cleanup() { [[ -n "$made" ]] && rm -f "$made"; }
trap cleanup EXIT

for tool in md5sum sha512sum openssl rhash python3; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is required" >&2; exit 1; }
done
cargo build --release --quiet
vmimage=target/release/vmimage

cat "$file" >/dev/null # warm the page cache

declare -A commands=(
    [vmimage]="$vmimage hash '$file'"
    [coreutils]="md5sum '$file' && sha512sum '$file'"
    [rhash]="rhash --md5 --sha512 '$file'"
    [openssl-md5]="openssl dgst -md5 '$file'"
    [openssl-sha512]="openssl dgst -sha512 '$file'"
)
order=(vmimage coreutils rhash openssl-md5 openssl-sha512)
times=$(mktemp)
trap 'cleanup; rm -f "$times"' EXIT

now() { date +%s.%N; }
for ((round = 1; round <= reps; round++)); do
    for name in "${order[@]}"; do
        start=$(now)
        bash -c "${commands[$name]}" >/dev/null
        end=$(now)
        echo "$name $start $end" >>"$times"
    done
    echo "round $round/$reps done" >&2
done

echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs"
python3 - "$times" "$file" <<'PY'
import statistics, sys, os
runs = {}
for line in open(sys.argv[1]):
    name, start, end = line.split()
    runs.setdefault(name, []).append(float(end) - float(start))
size = os.path.getsize(sys.argv[2])
med = {k: statistics.median(v) for k, v in runs.items()}
print(f"file: {sys.argv[2]} ({size / 2**30:.2f} GiB), {len(runs['vmimage'])} rounds, medians:")
for name in ["vmimage", "coreutils", "rhash", "openssl-md5", "openssl-sha512"]:
    all_runs = " ".join(f"{t:.2f}" for t in runs[name])
    print(f"  {name:<15} {med[name]:6.2f} s  {size / med[name] / 1e6:7.0f} MB/s   (runs: {all_runs})")
slower = max(med["openssl-md5"], med["openssl-sha512"])
print("ratios:")
print(f"  vmimage / slower openssl alone   = {med['vmimage'] / slower:.2f}   (target <= 1.10)")
print(f"  rhash / vmimage                  = {med['rhash'] / med['vmimage']:.2f}   (target >= 2)")
print(f"  coreutils pair / vmimage         = {med['coreutils'] / med['vmimage']:.2f}   (target >= 2.5)")
PY
