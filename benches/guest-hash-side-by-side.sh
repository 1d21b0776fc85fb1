#!/usr/bin/env bash
# Times `vmimage hash --guest` (blkhash-sha256) against `openssl dgst -sha256` over a file of
# just the allocated bytes, the two rows of issue 16, and prints medians of the wall time and of
# the CPU time (user + sys, which other jobs on a shared machine disturb less), their ratios,
# and the load average before and after:
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

# time_one CMD... : "WALL CPU" of one run (CPU: the child's user + sys).
time_one() { python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t = time.perf_counter()
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
wall = time.perf_counter() - t
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.4f} {r.ru_utime + r.ru_stime:.4f}")
PY
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc), runs: $reps (median)"
declare -A wall cpu
record() { # KEY CMD...
    local key=$1 w c
    shift
    read -r w c <<<"$(time_one "$@")"
    wall[$key]+="$w "
    cpu[$key]+="$c "
}
for ((r = 0; r < reps; r++)); do
    record q_v "$vmimage" hash --guest tree.qcow2
    record q_o openssl dgst -sha256 tree.raw.alloc
    record s_v "$vmimage" hash --guest sparse.raw
    record s_o openssl dgst -sha256 sparse.raw.alloc
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
mw() { tr ' ' '\n' <<<"${wall[$1]}" | grep . | median; }
mc() { tr ' ' '\n' <<<"${cpu[$1]}" | grep . | median; }
qv=$(mw q_v) qo=$(mw q_o) sv=$(mw s_v) so=$(mw s_o)
cqv=$(mc q_v) cqo=$(mc q_o) csv=$(mc s_v) cso=$(mc s_o)
printf '%-52s %8s s wall %8s s cpu\n' "vmimage hash --guest tree.qcow2 (700 MiB in 4 GiB)" "$qv" "$cqv" \
    "openssl dgst -sha256 over its 700 MiB" "$qo" "$cqo" \
    "vmimage hash --guest sparse.raw (1 GiB in 64 GiB)" "$sv" "$csv" \
    "openssl dgst -sha256 over its 1 GiB" "$so" "$cso"
python3 -c "print(f'wall ratios: qcow2 {$qv/$qo:.2f}x (target <= 0.65), sparse raw {$sv/$so:.2f}x (target <= 1.3)')"
python3 -c "print(f'cpu ratios:  qcow2 {$cqv/$cqo:.2f}x, sparse raw {$csv/$cso:.2f}x (2 threads: half the wall at best)')"
