#!/usr/bin/env bash
# Builds the cargo-fuzz targets, seeds their corpora with images made by qemu-img, runs each
# target for SECONDS and prints, per target, the executions and the result.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      (default: 60 seconds, every target)
#
# - Toolchain: nightly when installed; otherwise (or with VMIMAGE_FUZZ_STABLE=1) stable with
#   RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags to rustc, which stable accepts only then).
#   cargo-fuzz is installed with `cargo install cargo-fuzz --locked` when missing.
# - Builds are cargo-fuzz's default: optimised, with debug assertions and overflow checks, and
#   AddressSanitizer, so an arithmetic overflow on a hostile field is a finding too.
# - Limits per input: 64 KiB (-max_len), 1 s (-timeout: a hang longer than that on a 64 KiB
#   input is a bug), 2 GiB resident (-rss_limit_mb, ASan's own overhead included) and no single
#   allocation above 512 MiB (-malloc_limit_mb: the largest table the library reads is the
#   64 MiB VHD BAT cap).
# - Corpora live in fuzz/corpus/TARGET (not in git); seeds are regenerated on every run, the
#   inputs the fuzzer found are kept. Findings go to fuzz/artifacts/TARGET, logs to
#   fuzz/logs/TARGET.log. The processes run under `nice`: the machine is shared.
#
# Exit status: 0 when no target found anything, 1 when one did (the summary says which), 2
# when the build failed.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-60}
shift || true
all_targets=$(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^vmimage-fuzz$')
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    # shellcheck disable=SC2206
    targets=($all_targets)
fi
for t in "${targets[@]}"; do
    if ! grep -qx "$t" <<<"$all_targets"; then
        echo "fuzz/run.sh: unknown target $t (targets: $(echo $all_targets))" >&2
        exit 2
    fi
done

# --- toolchain ---------------------------------------------------------------------------
toolchain=()
if [ "${VMIMAGE_FUZZ_STABLE:-0}" != 1 ] && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
    echo "fuzz/run.sh: using the nightly toolchain"
else
    export RUSTC_BOOTSTRAP=1
    echo "fuzz/run.sh: using stable with RUSTC_BOOTSTRAP=1 (no nightly, or VMIMAGE_FUZZ_STABLE=1)"
fi
if ! cargo "${toolchain[@]}" fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
if ! nice cargo "${toolchain[@]}" fuzz build; then
    echo "fuzz/run.sh: the fuzz targets failed to build" >&2
    exit 2
fi

# --- seeds ---------------------------------------------------------------------------------
seeds=$(mktemp -d /tmp/vmimage-fuzz-seeds.XXXXXX)
trap 'rm -rf "$seeds"' EXIT

# mk NAME SIZE OPTIONS...: qemu-img create, quietly, into the seed directory; a format this
# qemu-img cannot make is skipped.
mk() {
    local name=$1 size=$2
    shift 2
    qemu-img create -q "$@" "$seeds/$name" "$size" >/dev/null 2>&1 || rm -f "$seeds/$name"
}
# qemu-io writes into an image made by mk (guest data, compressed clusters, ...).
io() {
    local name=$1 fmt=$2
    shift 2
    [ -f "$seeds/$name" ] || return 0
    local args=()
    for c in "$@"; do args+=(-c "$c"); done
    qemu-io -f "$fmt" "${args[@]}" "$seeds/$name" >/dev/null 2>&1 || rm -f "$seeds/$name"
}
# Writes a big-endian u32 at an offset of a file.
put32() {
    printf "$(printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($2 >> 24 & 255)) $(($2 >> 16 & 255)) \
        $(($2 >> 8 & 255)) $(($2 & 255)))" |
        dd of="$1" bs=1 seek="$3" conv=notrunc status=none
}

if ! command -v qemu-img >/dev/null; then
    echo "fuzz/run.sh: qemu-img is needed to make the seed images" >&2
    exit 2
fi

# qcow2: every cluster size that fits in 64 KiB, v2 and v3, data, zero clusters, compressed
# clusters (zlib, zstd), extended L2, snapshots, bitmaps, every refcount width.
mk q512.qcow2 1M -f qcow2 -o cluster_size=512
io q512.qcow2 qcow2 "write -P 0x5a 0 4k" "write -z 8k 1k" "write -P 1 100k 512"
mk q1k-v2.qcow2 1M -f qcow2 -o cluster_size=1024,compat=0.10
io q1k-v2.qcow2 qcow2 "write -P 7 0 3k" "write -P 9 500k 1k"
mk q4k.qcow2 4M -f qcow2 -o cluster_size=4096
io q4k.qcow2 qcow2 "write -P 0x11 0 4k" "write -c -P 0x22 4k 4k" "write -z 8k 4k"
mk q4k-zstd.qcow2 4M -f qcow2 -o cluster_size=4096,compression_type=zstd
io q4k-zstd.qcow2 qcow2 "write -c -P 0x33 0 4k" "write -c -P 0x44 12k 4k"
mk q2k-snap.qcow2 1M -f qcow2 -o cluster_size=2048
io q2k-snap.qcow2 qcow2 "write -P 1 0 2k"
[ -f "$seeds/q2k-snap.qcow2" ] &&
    { qemu-img snapshot -c s1 "$seeds/q2k-snap.qcow2" >/dev/null 2>&1 || rm -f "$seeds/q2k-snap.qcow2"; }
io q2k-snap.qcow2 qcow2 "write -P 2 0 2k"
mk q16k-ext.qcow2 1M -f qcow2 -o cluster_size=16k,extended_l2=on
io q16k-ext.qcow2 qcow2 "write -P 3 0 1k" "write -z 4k 512"
mk q4k-lazy.qcow2 1M -f qcow2 -o cluster_size=4096,lazy_refcounts=on
for bits in 1 2 4 8 32 64; do
    mk "q1k-rc$bits.qcow2" 1M -f qcow2 -o "cluster_size=1024,refcount_bits=$bits"
    io "q1k-rc$bits.qcow2" qcow2 "write -P 5 0 2k"
done
mk q4k-bitmap.qcow2 1M -f qcow2 -o cluster_size=4096
[ -f "$seeds/q4k-bitmap.qcow2" ] &&
    { qemu-img bitmap --add "$seeds/q4k-bitmap.qcow2" b0 >/dev/null 2>&1 || rm -f "$seeds/q4k-bitmap.qcow2"; }
mk q512-backing.qcow2 1M -f qcow2 -o cluster_size=512 -b q512.qcow2 -F qcow2

# VHD: dynamic (QEMU's 2 MiB blocks: data lies past 64 KiB), fixed, and a dynamic VHD with
# 4 KiB blocks and two allocated blocks, patched from QEMU's, so that data fits in 64 KiB.
mk dyn.vhd 1M -f vpc
mk fixed.vhd 32k -f vpc -o subformat=fixed
mk big.vhd 64M -f vpc
io big.vhd vpc "write -P 9 0 4k"
if [ -f "$seeds/dyn.vhd" ]; then
    small="$seeds/small-blocks.vhd"
    head -c 1536 "$seeds/dyn.vhd" >"$small"
    put32 "$small" 256 $((512 + 28))  # max_table_entries
    put32 "$small" 4096 $((512 + 32)) # block_size
    head -c 1024 /dev/zero | tr '\0' '\377' >>"$small"
    put32 "$small" 5 1536      # block 0 at sector 5 (offset 2560)
    put32 "$small" 14 $((1536 + 12)) # block 3 at sector 14
    for _ in 1 2; do
        head -c 512 /dev/zero | tr '\0' '\377' >>"$small"
        head -c 4096 /dev/urandom >>"$small"
    done
    head -c 512 "$seeds/dyn.vhd" >>"$small"
fi

# Everything else info detects.
mk empty.vhdx 1M -f vhdx
mk sparse.vmdk 1M -f vmdk
mk stream.vmdk 1M -f vmdk -o subformat=streamOptimized
mk flat.vmdk 64k -f vmdk -o subformat=monolithicFlat
mk d.vdi 1M -f vdi
mk s.vdi 1M -f vdi -o static=on
# VMDK with zeroed grains. qemu-img's grains start at 64 KiB, past what an input holds, so the
# convert_vmdk target reaches grain data by pointing grain table entries into the file.
mk zeroed.vmdk 1M -f vmdk -o zeroed_grain=on
io zeroed.vmdk vmdk "write -z 0 64k"
# QEMU's legacy qcow (version 1): plain, with data, with a backing file, AES-encrypted.
mk v1.qcow 1M -f qcow
io v1.qcow qcow "write -P 0x21 0 8k"
mk v1-backing.qcow 1M -f qcow -b v1.qcow -F qcow
qemu-img create -q --object secret,id=s0,data=123456 -f qcow \
    -o encrypt.format=aes,encrypt.key-secret=s0 "$seeds/v1-aes.qcow" 1M >/dev/null 2>&1 ||
    rm -f "$seeds/v1-aes.qcow"
mk q.qed 1M -f qed -o cluster_size=4096,table_size=1
mk r.raw 64k -f raw
# MBR signature, and an ISO 9660 primary volume descriptor at 32 KiB.
head -c 65536 /dev/zero >"$seeds/mbr.raw"
printf '\x55\xaa' | dd of="$seeds/mbr.raw" bs=1 seek=510 conv=notrunc status=none
printf '\x80\x00\x00\x00\x83' | dd of="$seeds/mbr.raw" bs=1 seek=446 conv=notrunc status=none
head -c 40960 /dev/zero >"$seeds/iso.raw"
printf '\x01CD001\x01' | dd of="$seeds/iso.raw" bs=1 seek=32768 conv=notrunc status=none

# Recipes for the structure-aware target are bytes: random ones and all-zero ones.
for i in 1 2 3 4 5 6 7 8; do
    head -c $((64 * i)) /dev/urandom >"$seeds/recipe-$i"
done
head -c 512 /dev/zero >"$seeds/recipe-zero"

seed_target() {
    local target=$1 dir="corpus/$1"
    mkdir -p "$dir"
    case $target in
    qcow2_header | check | convert_qcow2)
        cp "$seeds"/*.qcow2 "$dir"/ ;;
    convert_vhd)
        cp "$seeds"/*.vhd "$dir"/ ;;
    convert_vmdk)
        cp "$seeds"/*.vmdk "$dir"/ ;;
    convert_vdi)
        cp "$seeds"/*.vdi "$dir"/ ;;
    inspect)
        for f in "$seeds"/*; do
            case $f in *recipe*) ;; *) cp "$f" "$dir/" ;; esac
        done ;;
    cloud_record)
        cp ../testdata/records/*.json "$dir"/ 2>/dev/null || true ;;
    qcow2_layout | vhdx_layout)
        cp "$seeds"/recipe-* "$dir"/ ;;
    manifest)
        # GNU (text and binary marker, escaped name, Packer's TAB), BSD-tagged with CRLF and a
        # comment, and a PGP-clearsigned manifest with a dash-escaped line.
        printf 'd41d8cd98f00b204e9800998ecf8427e  empty\n\\d41d8cd98f00b204e9800998ecf8427e *a\\nb\n' >"$dir/gnu"
        printf 'D41D8CD98F00B204E9800998ECF8427E\tpacker.qcow2\n' >"$dir/packer"
        printf 'MD5 (a b) = d41d8cd98f00b204e9800998ecf8427e\r\n# comment\n' >"$dir/bsd"
        printf -- '-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n# x: 1 bytes\nSHA256 (x) = e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n- -dash\n-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n' >"$dir/pgp" ;;
    *)
        # A target added without seeds here starts from the images.
        cp "$seeds"/*.qcow2 "$dir"/ ;;
    esac
}

# --- runs ----------------------------------------------------------------------------------
# One target for `seconds`. libFuzzer's -timeout is wall-clock time, so on a loaded machine a
# slow-but-correct input can be reported as a hang: every timeout is replayed alone (three
# times, at normal priority) and counts only if it times out again; one that does not is moved
# to artifacts/TARGET/unreproduced/ and the run resumes for the time left.
run_target() {
    local t=$1 log="logs/$1.log" start now left rc execs=0 n rate="" result="" artifact
    : >"$log"
    start=$(date +%s)
    while :; do
        now=$(date +%s)
        left=$((seconds - (now - start)))
        if [ "$left" -le 0 ]; then
            result=${result:-no findings}
            break
        fi
        set +e
        nice -n 19 cargo "${toolchain[@]}" fuzz run "$t" "corpus/$t" -- \
            -max_total_time="$left" -timeout=1 -max_len=65536 \
            -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1 \
            >>"$log" 2>&1
        rc=$?
        set -e
        n=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
        execs=$((execs + ${n:-0}))
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
        # Mark the stats consumed, so the next segment's are read next time.
        sed -i 's/^stat::number_of_executed_units:/stat::counted_units:/' "$log"
        if [ "$rc" -eq 0 ]; then
            result=${result:-no findings}
            break
        fi
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        if grep -q 'ERROR: libFuzzer: timeout' "$log" && [ -n "$artifact" ]; then
            sed -i 's/ERROR: libFuzzer: timeout/ERROR: libFuzzer: timeout (replayed)/' "$log"
            local again=0
            for _ in 1 2 3; do
                if ! cargo "${toolchain[@]}" fuzz run "$t" "$artifact" -- -timeout=1 \
                    -rss_limit_mb=2048 -malloc_limit_mb=512 >>"$log" 2>&1; then
                    again=1
                    break
                fi
            done
            if [ "$again" -eq 0 ]; then
                mkdir -p "artifacts/$t/unreproduced"
                mv "$artifact" "artifacts/$t/unreproduced/"
                echo "fuzz/run.sh: $t: a timeout did not reproduce alone (machine load); resuming" |
                    tee -a "$log"
                continue
            fi
            result="HANG: $artifact"
        elif grep -qE 'out-of-memory|malloc\(.*\) exceeds' "$log"; then
            result="OOM: $artifact"
        elif [ -n "$artifact" ]; then
            result="CRASH: $artifact"
        else
            result="FAILED (exit $rc, see fuzz/$log)"
        fi
        failed=1
        break
    done
    summary+=("$(printf '%-14s %12s %8s  %s' "$t" "$execs" "${rate:-?}/s" "$result")")
}

mkdir -p logs
summary=()
failed=0
for t in "${targets[@]}"; do
    seed_target "$t"
    echo "fuzz/run.sh: $t for ${seconds}s ($(ls "corpus/$t" | wc -l) inputs in the corpus)"
    run_target "$t"
done

echo
printf '%-14s %12s %10s  %s\n' target executions rate result
printf '%s\n' "${summary[@]}"
exit "$failed"
