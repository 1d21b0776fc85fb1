#!/usr/bin/env bash
# Side-by-side timing of `vmimage convert` against `qemu-img convert` on the same inputs, in one
# run: medians of RUNS alternating runs each, wall time beside user and system CPU time, the
# ratios, and the output sizes.
#
# Input: a 4 GiB sparse raw ext4 image holding a system library folder (mkfs.ext4 -d), about
# 725 MB of data, and the same disk converted by qemu-img to every input format (qcow2, dynamic
# VHD, monolithicSparse and streamOptimized VMDK, VHDX, VDI), built once under $WORK (default
# /tmp/vmimage-convert-bench) and deleted at the end unless KEEP=1.
#
#   benches/convert-side-by-side.sh                  # RUNS=5, every section
#   RUNS=3 SECTIONS="pairs" benches/convert-side-by-side.sh
#   SECTIONS="stream" KEEP=1 benches/convert-side-by-side.sh
#   DROP_CACHES=1 SYSCALLS=1 benches/convert-side-by-side.sh
#   SECTIONS=pairs PAIRS="raw->vhdx qcow2->vpc" RUNS=5 benches/convert-side-by-side.sh
#
# PAIRS (default: all 24) limits the pairs section to the IN->OUT pairs listed (qemu-img's
# format names: raw qcow2 vpc vmdk vhdx vdi -> qcow2 raw vpc vhdx).
#
# Each row: medians of wall time, user and system CPU of each tool; the speed ratio (qemu-img's
# wall / vmimage's) and the CPU ratio (qemu-img's user + sys / vmimage's); the output sizes
# and the MiB each tool stored (allocated blocks: holes are not stored); the 1-minute load
# average when the row ended (CPU times compare under load, wall times less so).
#
# SECTIONS (default "qcow2 pairs stream digests"):
#   qcow2    raw->qcow2 (plain, durable, -c zlib, -c zstd) and qcow2->raw, as before
#   pairs    every uncompressed pair: raw/qcow2/vhd/vmdk(monolithicSparse)/vhdx/vdi ->
#            qcow2/raw/vhd/vhdx
#   stream   streamOptimized VMDK: raw->vmdk (output, compressed on every core) and
#            vmdk->qcow2 (input, inflated on every core)
#   compressed  compressed qcow2 input (zlib, as `qemu-img convert -c` and cloud images ship,
#            and zstd) -> qcow2/raw/vhd/vhdx (not in the default SECTIONS)
#   digests  convert + md5 + sha512 against qemu-img convert, md5sum and sha512sum
#
# State, the same for every timed run of either tool (printed at the start):
#   - the input is read once into the page cache before each run (`cat > /dev/null`): both
#     tools read a warm input;
#   - the tool's previous output is deleted and `sync` runs just before it starts, so that no
#     write-back of an earlier output runs during it and both find the memory it freed;
#   - with DROP_CACHES=1 (needs root), `echo 3 > /proc/sys/vm/drop_caches` runs after that
#     sync and before the input is read back in: the page cache then holds the input and
#     nothing else;
#   - outputs go to $WORK, on the input's file system; neither tool syncs them (qemu-img's
#     default cache mode for convert is `unsafe`), except in the "durable" row.
# SYSCALLS=1 adds one `strace -f -c` run per tool and case and prints the system calls made.
#
# Needs: qemu-img, mkfs.ext4 (e2fsprogs), md5sum, sha512sum, GNU time (/usr/bin/time), bc,
# strace with SYSCALLS=1, and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
SRC=${SRC:-/usr/lib/x86_64-linux-gnu}
WORK=${WORK:-/tmp/vmimage-convert-bench}
VMIMAGE=${VMIMAGE:-target/release/vmimage}
SECTIONS=${SECTIONS:-qcow2 pairs stream digests}
[ -x "$VMIMAGE" ] || cargo build --release --quiet
VMIMAGE=$(realpath "$VMIMAGE")

mkdir -p "$WORK"
cleanup() { [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"; }
trap cleanup EXIT

IMG=$WORK/disk.raw
if [ ! -f "$IMG" ]; then
    truncate -s 4G "$IMG"
    mkfs.ext4 -q -F -d "$SRC" "$IMG" 2>/dev/null || mkfs.ext4 -q -F -d "$SRC" "$IMG"
fi
# input FMT -> the path of the disk in that input format, made by qemu-img once.
input() {
    local f
    case $1 in
        raw) echo "$IMG"; return ;;
        qcow2) f=$WORK/disk.qcow2; [ -f "$f" ] || qemu-img convert -O qcow2 "$IMG" "$f" ;;
        vpc) f=$WORK/disk.vhd; [ -f "$f" ] || qemu-img convert -O vpc "$IMG" "$f" ;;
        vmdk) f=$WORK/disk.vmdk; [ -f "$f" ] || qemu-img convert -O vmdk "$IMG" "$f" ;;
        stream) f=$WORK/disk-stream.vmdk
            [ -f "$f" ] || qemu-img convert -O vmdk -o subformat=streamOptimized "$IMG" "$f" ;;
        vhdx) f=$WORK/disk.vhdx; [ -f "$f" ] || qemu-img convert -O vhdx "$IMG" "$f" ;;
        vdi) f=$WORK/disk.vdi; [ -f "$f" ] || qemu-img convert -O vdi "$IMG" "$f" ;;
        zlib|zstd) f=$WORK/disk-$1.qcow2
            [ -f "$f" ] || qemu-img convert -c -O qcow2 -o compression_type=$1 "$IMG" "$f" ;;
    esac
    echo "$f"
}

can_drop=no
if [ "${DROP_CACHES:-0}" = 1 ]; then
    if sync && echo 3 2>/dev/null > /proc/sys/vm/drop_caches; then
        can_drop=yes
    else
        echo "DROP_CACHES=1: /proc/sys/vm/drop_caches is not writable here; not dropping" >&2
    fi
fi
echo "input: $IMG, $(du -k "$IMG" | cut -f1) KiB allocated of $(stat -c %s "$IMG") bytes"
echo "vmimage: $VMIMAGE ($("$VMIMAGE" --version 2>/dev/null || echo '?')), $(qemu-img --version | head -1)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), cores: $(nproc)"
echo "runs: $RUNS per tool and case (median), alternating; state: input warm, previous output"
echo "  deleted and sync before each run, page cache dropped before each run: $can_drop;"
echo "  outputs in $WORK (same file system), not synced unless the row says durable"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"

# median NUMBERS... -> the median
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { echo "a = ($1); b = ($2); if (b > 0) a / b else 0" | bc -l; }

# prepare IN OUT : the state every timed run starts from (see the header).
prepare() {
    rm -f "$2"
    sync
    [ "$can_drop" = yes ] && echo 3 > /proc/sys/vm/drop_caches
    cat "$1" > /dev/null
}

# timed CMD : runs the shell command CMD once; prints "wall user sys" (seconds, children
# included).
timed() {
    /usr/bin/time -f "%e %U %S" -o "$WORK/time" bash -c "$1" >/dev/null
    cat "$WORK/time"
}

# syscalls CMD : the system calls CMD makes, all threads and children.
syscalls() {
    strace -f -c -o "$WORK/strace" bash -c "$1" >/dev/null 2>&1
    # The total line: "100.00 SECONDS CALLS [ERRORS] total" (no usecs/call column).
    awk '$NF == "total" {print $3}' "$WORK/strace"
}

qemu_and_digests() { qemu-img convert "$@" && md5sum "${@: -1}" && sha512sum "${@: -1}"; }
export -f qemu_and_digests

header() {
    printf '\n%-26s %8s %8s %6s | %7s %7s %7s %7s %6s | %11s %11s %7s %7s %7s | %5s' case \
        qemu-img vmimage speed q-user v-user q-sys v-sys cpu-x qemu-size vm-size size \
        q-MiB v-MiB load
    [ "${SYSCALLS:-0}" = 1 ] && printf ' %9s %9s' q-calls v-calls
    printf '\n'
}

Q=$WORK/q.out
V=$WORK/v.out
# pair NAME INPUT QEMU_CMD VMIMAGE_CMD : one untimed run of each, then RUNS timed runs of
# each, alternating which of the two goes first; prints a row of medians: wall time, the
# speed-up (qemu-img's wall / vmimage's), user and system CPU time, and the CPU ratio
# (qemu-img's user + sys / vmimage's: above 1, vmimage does less work).
pair() {
    local name=$1 in=$2 qcmd=$3 vcmd=$4 i
    local qw=() qu=() qs=() vw=() vu=() vs=() w u s
    run_q() { prepare "$in" "$Q"; timed "$qcmd"; }
    run_v() { prepare "$in" "$V"; timed "$vcmd"; }
    run_q >/dev/null
    run_v >/dev/null
    for i in $(seq "$RUNS"); do
        local tq tv
        if [ $((i % 2)) = 1 ]; then
            tq=$(run_q); tv=$(run_v)
        else
            tv=$(run_v); tq=$(run_q)
        fi
        read -r w u s <<< "$tq"; qw+=("$w"); qu+=("$u"); qs+=("$s")
        read -r w u s <<< "$tv"; vw+=("$w"); vu+=("$u"); vs+=("$s")
    done
    local mqw mvw mqu mvu mqs mvs sq sv aq av
    mqw=$(median "${qw[@]}"); mvw=$(median "${vw[@]}")
    mqu=$(median "${qu[@]}"); mvu=$(median "${vu[@]}")
    mqs=$(median "${qs[@]}"); mvs=$(median "${vs[@]}")
    sq=$(stat -c %s "$Q"); sv=$(stat -c %s "$V")
    # Allocated MiB: what each tool stored (holes excluded), the output's share of the page
    # cache and of the system time.
    aq=$(( $(stat -c '%b * %B' "$Q") >> 20 )); av=$(( $(stat -c '%b * %B' "$V") >> 20 ))
    printf '%-26s %7.2fs %7.2fs %5.2fx | %6.2fs %6.2fs %6.2fs %6.2fs %5.2fx | %11s %11s %+6.2f%% %7s %7s | %5s' \
        "$name" "$mqw" "$mvw" "$(ratio "$mqw" "$mvw")" "$mqu" "$mvu" "$mqs" "$mvs" \
        "$(ratio "$mqu + $mqs" "$mvu + $mvs")" "$sq" "$sv" "$(ratio "($sv - $sq) * 100" "$sq")" \
        "$aq" "$av" "$(cut -d' ' -f1 /proc/loadavg)"
    if [ "${SYSCALLS:-0}" = 1 ]; then
        prepare "$in" "$Q"; local cq; cq=$(syscalls "$qcmd")
        prepare "$in" "$V"; local cv; cv=$(syscalls "$vcmd")
        printf ' %9s %9s' "$cq" "$cv"
    fi
    printf '\n'
}

vm="$VMIMAGE convert"
has() { [[ " $SECTIONS " == *" $1 "* ]]; }
header

# The conversion alone: qemu-img computes no digest, so vmimage runs with --algo none here.
# The "durable" row flushes both before they exit: qemu-img with `-t writeback`, vmimage with
# `--sync` (before its rename).
if has qcow2; then
    QCOW=$(input qcow2)
    pair "raw->qcow2" "$IMG" "qemu-img convert -f raw -O qcow2 $IMG $Q" \
        "$vm $IMG $V -O qcow2 --algo none"
    pair "raw->qcow2, durable" "$IMG" "qemu-img convert -f raw -t writeback -O qcow2 $IMG $Q" \
        "$vm $IMG $V -O qcow2 --algo none --sync"
    pair "raw->qcow2 -c zlib" "$IMG" "qemu-img convert -f raw -O qcow2 -c $IMG $Q" \
        "$vm $IMG $V -O qcow2 -c zlib --algo none"
    pair "raw->qcow2 -c zstd" "$IMG" \
        "qemu-img convert -f raw -O qcow2 -c -o compression_type=zstd $IMG $Q" \
        "$vm $IMG $V -O qcow2 -c zstd --algo none"
    pair "qcow2->raw" "$QCOW" "qemu-img convert -f qcow2 -O raw $QCOW $Q" \
        "$vm $QCOW $V -O raw --algo none"
fi

# Every uncompressed pair, with each tool's default subformat (dynamic VHD and VHDX).
if has pairs; then
    for in_fmt in raw qcow2 vpc vmdk vhdx vdi; do
        in=$(input "$in_fmt")
        for out_fmt in qcow2 raw vpc vhdx; do
            [ -z "${PAIRS:-}" ] || [[ " $PAIRS " == *" $in_fmt->$out_fmt "* ]] || continue
            pair "$in_fmt->$out_fmt" "$in" "qemu-img convert -f $in_fmt -O $out_fmt $in $Q" \
                "$vm $in $V -O $out_fmt --algo none"
        done
    done
fi

# streamOptimized VMDK: as output (deflate on every core, against qemu-img's one thread) and
# as input (grains inflated once, on every core).
if has stream; then
    STREAM=$(input stream)
    pair "raw->vmdk streamOptimized" "$IMG" \
        "qemu-img convert -f raw -O vmdk -o subformat=streamOptimized $IMG $Q" \
        "$vm $IMG $V -O vmdk --algo none"
    pair "vmdk stream->qcow2" "$STREAM" "qemu-img convert -f vmdk -O qcow2 $STREAM $Q" \
        "$vm $STREAM $V -O qcow2 --algo none"
fi

# Compressed qcow2 input, the usual cloud image: the scan inflates a cluster's first sector
# only (zlib), the write pass the whole cluster, on every core.
if has compressed; then
    for ctype in zlib zstd; do
        in=$(input "$ctype")
        for out_fmt in qcow2 raw vpc vhdx; do
            pair "qcow2 $ctype->$out_fmt" "$in" "qemu-img convert -f qcow2 -O $out_fmt $in $Q" \
                "$vm $in $V -O $out_fmt --algo none"
        done
    done
fi

# Convert plus the digests a cloud records: qemu-img convert, then md5sum and sha512sum.
if has digests; then
    QCOW=$(input qcow2)
    pair "raw->qcow2 + md5 + sha512" "$IMG" "qemu_and_digests -f raw -O qcow2 $IMG $Q" \
        "$vm $IMG $V -O qcow2"
    pair "qcow2->raw + md5 + sha512" "$QCOW" "qemu_and_digests -f qcow2 -O raw $QCOW $Q" \
        "$vm $QCOW $V -O raw"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
