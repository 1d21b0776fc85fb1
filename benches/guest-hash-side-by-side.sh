#!/usr/bin/env bash
# Times `vmimage hash --guest` (blkhash-sha256) against `openssl dgst -sha256` over a file of
# just the allocated bytes, the two rows of issue 16, and prints medians and ratios:
#   1. a 4 GiB qcow2 holding 700 MiB of data (random bytes in 4 MiB runs spread over the disk,
#      standing in for an ext4 file tree): target at most 0.65x openssl;
#   2. a 64 GiB sparse raw holding 1 GiB of data: target at most 1.3x openssl over the 1 GiB.
#
#   benches/guest-hash-side-by-side.sh [REPETITIONS]      (default 5)
#
# Files go under ${TMPDIR:-/tmp} (about 2.5 GiB, deleted at the end) and are read once before
# timing so that both tools read from the page cache; runs are interleaved. Run it on a quiet
# machine. VMIMAGE=path times that binary instead of building target/release/vmimage.
# Needs: cargo, qemu-img, openssl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-5}
if [[ -n "${VMIMAGE:-}" ]]; then
    vmimage=$VMIMAGE
else
    cargo build --release --quiet
    vmimage=$PWD/target/release/vmimage
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/vmimage-guest-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

# Data runs of 4 MiB at spread offsets, written to the disk and appended to the allocated-bytes
# file in the same order.
make_disk() { # NAME SIZE RUNS STRIDE_MIB
    truncate -s "$2" "$1"
    : >"$1.alloc"
    for ((i = 0; i < $3; i++)); do
        head -c $((4 << 20)) /dev/urandom >run.bin
        dd if=run.bin of="$1" bs=4M seek=$((i * $4 / 4)) conv=notrunc status=none
        cat run.bin >>"$1.alloc"
    done
    rm -f run.bin
}
echo "making the images in $work" >&2
make_disk tree.raw 4G 175 20          # 700 MiB in 4 GiB
qemu-img convert -O qcow2 tree.raw tree.qcow2 && rm tree.raw
make_disk sparse.raw 64G 256 256      # 1 GiB in 64 GiB
cat tree.qcow2 tree.raw.alloc sparse.raw.alloc >/dev/null
"$vmimage" hash --guest sparse.raw >/dev/null

time_one() { python3 - "$@" <<'PY'
import subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(f"{time.perf_counter() - t:.4f}")
PY
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

declare -A runs
for ((r = 0; r < reps; r++)); do
    runs[q_v]+="$(time_one "$vmimage" hash --guest tree.qcow2) "
    runs[q_o]+="$(time_one openssl dgst -sha256 tree.raw.alloc) "
    runs[s_v]+="$(time_one "$vmimage" hash --guest sparse.raw) "
    runs[s_o]+="$(time_one openssl dgst -sha256 sparse.raw.alloc) "
done
m() { tr ' ' '\n' <<<"${runs[$1]}" | grep . | median; }
qv=$(m q_v) qo=$(m q_o) sv=$(m s_v) so=$(m s_o)
printf '%-52s %8s s\n' "vmimage hash --guest tree.qcow2 (700 MiB in 4 GiB)" "$qv" \
    "openssl dgst -sha256 over its 700 MiB" "$qo" \
    "vmimage hash --guest sparse.raw (1 GiB in 64 GiB)" "$sv" \
    "openssl dgst -sha256 over its 1 GiB" "$so"
python3 -c "print(f'ratios: qcow2 {$qv/$qo:.2f}x (target <= 0.65), sparse raw {$sv/$so:.2f}x (target <= 1.3)')"
