#!/usr/bin/env bash
# Times two vmimage binaries against each other on the hot paths (hash, convert), interleaved
# run by run so that a change in machine load hits both alike, and prints each one's median
# wall time and user CPU time (the binary's own computation, which a loaded machine disturbs
# less; the system time of these runs is page-cache work, the same code in both) and the
# ratios NEW / BASE (above 1: NEW is slower).
#
#   benches/ab-side-by-side.sh BASE_BIN NEW_BIN [RUNS]     (default RUNS=5)
#
# Used to measure what `overflow-checks = true` costs: BASE built without it, NEW with it
# (docs/benchmarks.md, "Overflow checks"). Inputs, made once under $WORK (default /tmp/vmimage-ab):
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
# seconds CMD...: "WALL USER" seconds of one run.
seconds() {
    /usr/bin/time -o time.out -f '%e %U' "$@" >/dev/null
    cat time.out
}

printf '%-34s %9s %9s %7s %9s %9s %7s\n' case base new new/base base-usr new-usr new/base
case_ab() {
    local name=$1
    shift
    local -a tb=() tn=() cb=() cn=()
    local r
    rm -f out.*
    "$base" "${@}" >/dev/null # untimed warm-up
    for ((i = 0; i < runs; i++)); do
        rm -f out.*
        read -r -a r <<<"$(seconds "$base" "$@")"
        tb+=("${r[0]}") cb+=("${r[1]}")
        rm -f out.*
        read -r -a r <<<"$(seconds "$new" "$@")"
        tn+=("${r[0]}") cn+=("${r[1]}")
    done
    rm -f out.*
    local mb mn ub un
    mb=$(median "${tb[@]}")
    mn=$(median "${tn[@]}")
    ub=$(median "${cb[@]}")
    un=$(median "${cn[@]}")
    local ratio_usr=-
    # A conversion without digests spends next to no user time: no ratio then.
    if [ "$(echo "$ub > 0" | bc -l)" = 1 ]; then
        ratio_usr=$(printf '%.3f' "$(echo "$un / $ub" | bc -l)")
    fi
    printf '%-34s %8.2fs %8.2fs %7.3f %8.2fs %8.2fs %7s\n' "$name" "$mb" "$mn" \
        "$(echo "$mn / $mb" | bc -l)" "$ub" "$un" "$ratio_usr"
}

case_ab "hash 1 GiB (md5 + sha512)" hash rand.bin
case_ab "convert raw->qcow2 --algo none" convert disk.raw out.qcow2 -O qcow2 --algo none
case_ab "convert raw->qcow2 + md5 + sha512" convert disk.raw out.qcow2 -O qcow2
case_ab "convert raw->qcow2 -c zstd" convert disk.raw out.qcow2 -O qcow2 -c zstd --algo none
case_ab "convert qcow2->raw --algo none" convert disk.qcow2 out.raw -O raw --algo none
