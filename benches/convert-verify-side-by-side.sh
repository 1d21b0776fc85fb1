#!/usr/bin/env bash
# `vmimage convert --verify` against the same conversion without it (issue 16's target: at most
# 25 % more): medians of RUNS alternating runs of raw -> qcow2, qcow2 -> raw and qcow2 ->
# streamOptimized VMDK, wall and CPU (user + sys) times, and the load average.
#
# Input: the 4 GiB ext4 image of benches/convert-side-by-side.sh (mkfs.ext4 -d SRC, about
# 725 MB of data) and its qcow2, built once under $WORK and deleted at the end unless KEEP=1.
#
#   RUNS=3 benches/convert-verify-side-by-side.sh
#   CASES="disk.raw out.qcow2 -O qcow2" benches/convert-verify-side-by-side.sh   # one case
#   CASES="disk.raw out.qcow2 -O qcow2;disk.qcow2 out.raw -O raw" ...            # several
#
# Needs: qemu-img, mkfs.ext4, bc, and a release build (VMIMAGE=path to time another binary).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SRC=${SRC:-/usr/lib/x86_64-linux-gnu}
WORK=${WORK:-/tmp/vmimage-convert-verify-bench}
VMIMAGE=$(realpath "${VMIMAGE:-target/release/vmimage}")
[ -x "$VMIMAGE" ] || cargo build --release --quiet
mkdir -p "$WORK"
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
if [ ! -f disk.raw ]; then
    truncate -s 4G disk.raw
    mkfs.ext4 -q -F -d "$SRC" disk.raw 2>/dev/null || mkfs.ext4 -q -F -d "$SRC" disk.raw
fi
[ -f disk.qcow2 ] || qemu-img convert -O qcow2 disk.raw disk.qcow2

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# timed CMD... : "WALL CPU" of one run, after deleting the last output and syncing.
timed() {
    rm -f out.*
    sync
    /usr/bin/time -f "%e %U %S" -o time.txt "$@" >/dev/null
    local e u s
    read -r e u s <time.txt
    echo "$e $(echo "$u + $s" | bc -l)"
}
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc), runs: $RUNS (median)"
# CASES: conversions separated by ';' (an unquoted list would split each case into words).
IFS=';' read -r -a cases <<<"${CASES:-disk.raw out.qcow2 -O qcow2;disk.qcow2 out.raw -O raw;disk.qcow2 out.vmdk -O vmdk}"
for case in "${cases[@]}"; do
    pw=() pc=() vw=() vc=()
    for ((i = 0; i < RUNS; i++)); do
        # shellcheck disable=SC2086
        read -r w c <<<"$(timed "$VMIMAGE" convert $case)"
        pw+=("$w") pc+=("$c")
        # shellcheck disable=SC2086
        read -r w c <<<"$(timed "$VMIMAGE" convert --verify $case)"
        vw+=("$w") vc+=("$c")
    done
    a=$(median "${pw[@]}") b=$(median "${vw[@]}") x=$(median "${pc[@]}") y=$(median "${vc[@]}")
    printf '%-30s without %7.2fs wall %6.2fs cpu | --verify %7.2fs wall %6.2fs cpu | %+6.1f%% wall %+6.1f%% cpu\n' \
        "$case" "$a" "$x" "$b" "$y" "$(echo "($b - $a) * 100 / $a" | bc -l)" "$(echo "($y - $x) * 100 / $x" | bc -l)"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
