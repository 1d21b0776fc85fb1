#!/usr/bin/env bash
# Times two vmimage binaries against each other on the hot paths (hash, convert), interleaved
# run by run so that a change in machine load hits both alike, and prints each one's median
# wall time and the ratio NEW / BASE (above 1: NEW is slower).
#
#   benches/ab-side-by-side.sh BASE_BIN NEW_BIN [RUNS]     (default RUNS=5)
#
# Used to measure what `overflow-checks = true` costs: BASE built without it, NEW with it
# (README, "Overflow checks"). Inputs, made once under $WORK (default /tmp/vmimage-ab):
# a 1 GiB file of random bytes (hash), and a 2 GiB sparse raw disk holding 400 MiB of random
# data in 4 MiB runs (convert), converted to qcow2 once for the qcow2 -> raw case.
# Needs: python3, qemu-img.
set -euo pipefail

base=$(realpath "$1")
new=$(realpath "$2")
runs=${3:-5}
WORK=${WORK:-/tmp/vmimage-ab}
mkdir -p "$WORK"
cd "$WORK"

if [ ! -f rand.bin ]; then
    head -c $((1 << 30)) /dev/urandom >rand.bin
fi
if [ ! -f disk.raw ]; then
    python3 - <<'EOF'
with open('disk.raw', 'wb') as f, open('rand.bin', 'rb') as src:
    f.truncate(2 << 30)
    for i in range(100):
        f.seek(i * (20 << 20))
        f.write(src.read(4 << 20))
EOF
fi
[ -f disk.qcow2 ] || qemu-img convert -f raw -O qcow2 disk.raw disk.qcow2
cat rand.bin disk.raw disk.qcow2 >/dev/null

# median SECONDS...
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
# seconds CMD...: wall time of one run.
seconds() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

printf '%-34s %9s %9s %7s\n' case base new new/base
case_ab() {
    local name=$1
    shift
    local -a tb=() tn=()
    rm -f out.*
    "$base" "${@}" >/dev/null # untimed warm-up
    for ((i = 0; i < runs; i++)); do
        rm -f out.*
        tb+=("$(seconds "$base" "$@")")
        rm -f out.*
        tn+=("$(seconds "$new" "$@")")
    done
    rm -f out.*
    local mb mn
    mb=$(median "${tb[@]}")
    mn=$(median "${tn[@]}")
    printf '%-34s %8.3fs %8.3fs %7.3f\n' "$name" "$mb" "$mn" "$(echo "$mn / $mb" | bc -l)"
}

case_ab "hash 1 GiB (md5 + sha512)" hash rand.bin
case_ab "convert raw->qcow2 --algo none" convert disk.raw out.qcow2 -O qcow2 --algo none
case_ab "convert raw->qcow2 + md5 + sha512" convert disk.raw out.qcow2 -O qcow2
case_ab "convert raw->qcow2 -c zstd" convert disk.raw out.qcow2 -O qcow2 -c zstd --algo none
case_ab "convert qcow2->raw --algo none" convert disk.qcow2 out.raw -O raw --algo none
