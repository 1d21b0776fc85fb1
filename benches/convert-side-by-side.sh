#!/usr/bin/env bash
# Side-by-side timing of `vmimage convert` against `qemu-img convert` on the same input, in one
# run: medians of RUNS runs each, ratios, and output sizes.
#
# Input: a 4 GiB sparse raw ext4 image holding a system library folder (mkfs.ext4 -d), about
# 725 MB of data, built once under $WORK (default /tmp/vmimage-convert-bench) and deleted at the
# end unless KEEP=1.
#
#   benches/convert-side-by-side.sh            # RUNS=3, SRC=/usr/lib/x86_64-linux-gnu
#   RUNS=5 SRC=/usr/lib KEEP=1 benches/convert-side-by-side.sh
#
# Needs: qemu-img, mkfs.ext4 (e2fsprogs), md5sum, sha512sum, and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SRC=${SRC:-/usr/lib/x86_64-linux-gnu}
WORK=${WORK:-/tmp/vmimage-convert-bench}
VMIMAGE=${VMIMAGE:-target/release/vmimage}
[ -x "$VMIMAGE" ] || cargo build --release --quiet

mkdir -p "$WORK"
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT

IMG=$WORK/disk.raw
if [ ! -f "$IMG" ]; then
    truncate -s 4G "$IMG"
    mkfs.ext4 -q -F -d "$SRC" "$IMG" 2>/dev/null || mkfs.ext4 -q -F -d "$SRC" "$IMG"
fi
QCOW=$WORK/disk.qcow2
[ -f "$QCOW" ] || qemu-img convert -O qcow2 "$IMG" "$QCOW"
echo "input: $IMG, $(du -k "$IMG" | cut -f1) KiB allocated of $(stat -c %s "$IMG") bytes"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc), runs: $RUNS (median)"
sync

# median SECONDS... -> the median
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# time_cmd OUT CMD... : runs CMD RUNS times (removing OUT before each); prints the median wall
# time and the median CPU time (user + sys, children included), which the other jobs on a
# shared machine disturb less than the wall time.
time_cmd() {
    local out=$1; shift
    local walls=() cpus=()
    for _ in $(seq "$RUNS"); do
        rm -f "$out"
        /usr/bin/time -f "%e %U %S" -o "$WORK/time" "$@" >/dev/null
        read -r e u s < "$WORK/time"
        walls+=("$e")
        cpus+=("$(echo "$u + $s" | bc -l)")
    done
    echo "$(median "${walls[@]}") $(median "${cpus[@]}")"
}

qemu_and_digests() { qemu-img convert "$@" && md5sum "${@: -1}" && sha512sum "${@: -1}"; }
export -f qemu_and_digests

printf '\n%-26s %9s %9s %7s %9s %9s %7s %11s %11s %7s\n' case qemu-img vmimage speedup \
    qemu-cpu vm-cpu cpu-x qemu-size vm-size size
# row NAME "QWALL QCPU" "VWALL VCPU" QSIZE VSIZE
row() {
    local name=$1 sq=$4 sv=$5 wq cq wv cv
    read -r wq cq <<< "$2"
    read -r wv cv <<< "$3"
    printf '%-26s %8.2fs %8.2fs %6.2fx %8.2fs %8.2fs %6.2fx %11s %11s %+6.2f%%\n' "$name" \
        "$wq" "$wv" "$(echo "$wq / $wv" | bc -l)" "$cq" "$cv" "$(echo "$cq / $cv" | bc -l)" \
        "$sq" "$sv" "$(echo "($sv - $sq) * 100 / $sq" | bc -l)"
}

Q=$WORK/q.out
V=$WORK/v.out
case_run() {
    local name=$1 qargs=$2 vargs=$3 input=$4
    # shellcheck disable=SC2086
    local tq tv sq sv
    tq=$(time_cmd "$Q" qemu-img convert $qargs "$input" "$Q")
    sq=$(stat -c %s "$Q")
    # shellcheck disable=SC2086
    tv=$(time_cmd "$V" "$VMIMAGE" convert "$input" "$V" $vargs)
    sv=$(stat -c %s "$V")
    row "$name" "$tq" "$tv" "$sq" "$sv"
}

case_run "raw->qcow2" "-O qcow2" "-O qcow2" "$IMG"
case_run "raw->qcow2 -c zlib" "-O qcow2 -c" "-O qcow2 -c zlib" "$IMG"
case_run "raw->qcow2 -c zstd" "-O qcow2 -c -o compression_type=zstd" "-O qcow2 -c zstd" "$IMG"
case_run "qcow2->raw" "-O raw" "-O raw" "$QCOW"

# Convert plus the digests a cloud records: qemu-img convert, then md5sum and sha512sum.
tq=$(time_cmd "$Q" bash -c 'qemu_and_digests "$@"' _ -O qcow2 "$IMG" "$Q")
tv=$(time_cmd "$V" "$VMIMAGE" convert "$IMG" "$V" -O qcow2)
row "raw->qcow2 + md5 + sha512" "$tq" "$tv" "$(stat -c %s "$Q")" "$(stat -c %s "$V")"
tq=$(time_cmd "$Q" bash -c 'qemu_and_digests "$@"' _ -O raw "$QCOW" "$Q")
tv=$(time_cmd "$V" "$VMIMAGE" convert "$QCOW" "$V" -O raw)
row "qcow2->raw + md5 + sha512" "$tq" "$tv" "$(stat -c %s "$Q")" "$(stat -c %s "$V")"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
