#!/usr/bin/env bash
# Peak memory (resident set size, from /usr/bin/time -v) of `vmimage info`, `check` and
# `convert` on images whose headers claim far more than their files hold, and on large sparse
# images. Memory must follow what the file holds, never what the header claims; this prints
# one row per run so the claim can be checked (docs/benchmarks.md, "Bounded memory").
#
#   benches/peak-rss.sh [WORKDIR]      (default: a new directory under /tmp, removed at the end)
#
# Needs qemu-img and GNU time (/usr/bin/time). Writes at most ~200 MiB of real data (the
# rest is sparse); takes about a minute, most of it digesting the 16 GiB raw output.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=$PWD/target/release/vmimage
if [ $# -ge 1 ]; then
    work=$1
    mkdir -p "$work"
else
    work=$(mktemp -d /tmp/vmimage-peak-rss.XXXXXX)
    trap 'rm -rf "$work"' EXIT
fi
cd "$work"

# put32/put64 FILE OFFSET VALUE: a big-endian field.
put() {
    local file=$1 at=$2 value=$3 bytes=$4 hex="" i
    for ((i = bytes - 1; i >= 0; i--)); do
        hex+=$(printf '\\x%02x' $(((value >> (8 * i)) & 255)))
    done
    printf "$hex" | dd of="$file" bs=1 seek="$at" conv=notrunc status=none
}
put32() { put "$1" "$2" "$3" 4; }
put64() { put "$1" "$2" "$3" 8; }

echo "making the images in $work" >&2
# 1. A 64 MiB qcow2 whose header claims 2^31 L1 entries (16 GiB of L1) for a 2^60-byte disk.
qemu-img create -q -f qcow2 l1-2g.qcow2 64M
qemu-io -c "write -P 0x5a 0 1M" l1-2g.qcow2 >/dev/null
put32 l1-2g.qcow2 36 $((1 << 31))
put64 l1-2g.qcow2 24 $((1 << 60))
# 2. The same with an 8 EiB virtual size (2^63 - 512) and an L1 size that matches it at 2 MiB
#    clusters (2^24 entries, 128 MiB of L1).
qemu-img create -q -f qcow2 -o cluster_size=2M size-8e.qcow2 64M
put64 size-8e.qcow2 24 $(((1 << 63) - 512))
put32 size-8e.qcow2 36 $((1 << 24))
# 3. A valid 1 PiB qcow2: its 16 MiB L1 table is really in the file (all unallocated).
qemu-img create -q -f qcow2 1p.qcow2 1P
# 4. A 1 TiB qcow2 with preallocated metadata: 128 MiB of real L2 tables.
qemu-img create -q -f qcow2 -o preallocation=metadata 1t-meta.qcow2 1T
# 5. A 1 TB sparse raw disk with 1 MiB of data at 700 GiB.
qemu-img create -q -f raw 1t.raw 1T
qemu-io -f raw -c "write -P 0x11 700G 1M" 1t.raw >/dev/null

# run LABEL ARGS...: one command under /usr/bin/time -v; prints the exit status, the peak
# RSS and the wall time.
run() {
    local label=$1
    shift
    local log rc rss wall
    log=$(mktemp)
    set +e
    /usr/bin/time -v "$bin" "$@" >/dev/null 2>"$log"
    rc=$?
    set -e
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$log")
    printf '%-38s %-8s exit %-3s %8.1f MiB %10s\n' "$label" "$1" "$rc" "$(echo "$rss / 1024" | bc -l)" "$wall"
    rm -f "$log" out.qcow2 out.raw
}

printf '%-38s %-8s %-8s %12s %10s\n' image command status "peak RSS" wall
for img in l1-2g.qcow2 size-8e.qcow2 1p.qcow2 1t-meta.qcow2 1t.raw; do
    size=$(stat -c %s "$img")
    label="$img ($((size / 1024 / 1024)) MiB file)"
    run "$label" info "$img"
    run "$label" check "$img"
    # The preallocated image's clusters are holes in its file: skipped after SEEK_DATA, not
    # read, so this is quick too.
    run "$label" convert "$img" out.qcow2 -O qcow2
done
# Raw output digests every byte of the output, holes included, so it costs time in proportion
# to the virtual size (memory stays flat): run it on the hostile headers, which are refused,
# and on a 16 GiB disk as a measured example.
for img in l1-2g.qcow2 size-8e.qcow2; do
    run "$img" convert "$img" out.raw -O raw
done
qemu-img create -q -f qcow2 16g.qcow2 16G
qemu-io -c "write -P 0x22 8G 1M" 16g.qcow2 >/dev/null
run "16g.qcow2 (16 GiB disk, 1 MiB data)" convert 16g.qcow2 out.raw -O raw
