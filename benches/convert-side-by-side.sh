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

# timed CMD : runs the shell command CMD once; prints its wall time and CPU time (user + sys,
# children included, which the other jobs on a shared machine disturb less than the wall time).
timed() {
    /usr/bin/time -f "%e %U %S" -o "$WORK/time" bash -c "$1" >/dev/null
    local e u s
    read -r e u s < "$WORK/time"
    echo "$e $(echo "$u + $s" | bc -l)"
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
# pair NAME QEMU_CMD VMIMAGE_CMD : one untimed run of each, then RUNS timed runs of each,
# alternating which of the two goes first; prints a row of medians.
#
# Each tool's previous output is deleted just before it runs, and `sync` runs before each:
# on this virtual machine, new page cache is written at ~400 MB/s unless a file of about the
# same size was just deleted (then ~3.5 GB/s: the host no longer backs long-freed guest
# memory), and a tool must not share the CPU and the disk with the write-back of the other's
# output. Both tools are timed in the same state.
pair() {
    local name=$1 qcmd=$2 vcmd=$3 i
    local qw=() qc=() vw=() vc=() tq tv w c
    run_q() { rm -f "$Q"; sync; timed "$qcmd"; }
    run_v() { rm -f "$V"; sync; timed "$vcmd"; }
    run_q >/dev/null
    run_v >/dev/null
    for i in $(seq "$RUNS"); do
        if [ $((i % 2)) = 1 ]; then
            tq=$(run_q); tv=$(run_v)
        else
            tv=$(run_v); tq=$(run_q)
        fi
        read -r w c <<< "$tq"; qw+=("$w"); qc+=("$c")
        read -r w c <<< "$tv"; vw+=("$w"); vc+=("$c")
    done
    row "$name" "$(median "${qw[@]}") $(median "${qc[@]}")" \
        "$(median "${vw[@]}") $(median "${vc[@]}")" "$(stat -c %s "$Q")" "$(stat -c %s "$V")"
}

# The conversion alone: qemu-img computes no digest, so vmimage runs with --algo none here.
# Neither flushes its output to the disk by default (qemu-img's cache mode for convert is
# `unsafe`); the "durable" row flushes both before they exit: qemu-img with `-t writeback`,
# vmimage with `--sync` (before its rename).
vm="$VMIMAGE convert"
pair "raw->qcow2" "qemu-img convert -O qcow2 $IMG $Q" "$vm $IMG $V -O qcow2 --algo none"
pair "raw->qcow2, durable" "qemu-img convert -t writeback -O qcow2 $IMG $Q" \
    "$vm $IMG $V -O qcow2 --algo none --sync"
pair "raw->qcow2 -c zlib" "qemu-img convert -O qcow2 -c $IMG $Q" \
    "$vm $IMG $V -O qcow2 -c zlib --algo none"
pair "raw->qcow2 -c zstd" "qemu-img convert -O qcow2 -c -o compression_type=zstd $IMG $Q" \
    "$vm $IMG $V -O qcow2 -c zstd --algo none"
pair "qcow2->raw" "qemu-img convert -O raw $QCOW $Q" "$vm $QCOW $V -O raw --algo none"
# The cloud formats: VMware's streamOptimized VMDK (compressed on every core), VHD, VHDX.
pair "raw->vmdk streamOptimized" "qemu-img convert -O vmdk -o subformat=streamOptimized $IMG $Q" \
    "$vm $IMG $V -O vmdk --algo none"
pair "raw->vpc" "qemu-img convert -O vpc $IMG $Q" "$vm $IMG $V -O vpc --algo none"
pair "raw->vhdx" "qemu-img convert -O vhdx $IMG $Q" "$vm $IMG $V -O vhdx --algo none"

# Convert plus the digests a cloud records: qemu-img convert, then md5sum and sha512sum.
pair "raw->qcow2 + md5 + sha512" "qemu_and_digests -O qcow2 $IMG $Q" "$vm $IMG $V -O qcow2"
pair "qcow2->raw + md5 + sha512" "qemu_and_digests -O raw $QCOW $Q" "$vm $QCOW $V -O raw"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
