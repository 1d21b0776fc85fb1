#!/usr/bin/env bash
# vmimage check vs qemu-img check, side by side on the same files, in one run.
#
# Builds three images under a temporary directory in /tmp (removed at exit):
#   big-64k.qcow2   4 GiB virtual, 64 KiB clusters, every cluster allocated (4 GiB file)
#   dense-4k.qcow2  1 GiB virtual, 4 KiB clusters, every cluster allocated (262144 clusters)
#   dense-512.qcow2 64 MiB virtual, 512-byte clusters, every cluster allocated (131072 clusters)
#   zstd.qcow2      1 GiB of compressible data, `convert -c` with zstd (16384 compressed clusters)
# then times RUNS runs (default 9) of each tool on each image, page cache warm, and prints the
# medians and the ratio qemu-img / vmimage (above 1: vmimage is faster).
#
# Usage: benches/check-side-by-side.sh [path/to/vmimage]   (RUNS=n to change the run count)
# The machine is shared and has 2 cores: timings are noisy, compare ratios, not absolutes.
set -euo pipefail

VMIMAGE=${1:-target/release/vmimage}
RUNS=${RUNS:-9}
command -v qemu-img >/dev/null || { echo "qemu-img is required" >&2; exit 2; }
[ -x "$VMIMAGE" ] || { echo "build first: cargo build --release ($VMIMAGE missing)" >&2; exit 2; }
VMIMAGE=$(realpath "$VMIMAGE")

DIR=$(mktemp -d /tmp/vmimage-check-bench.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
cd "$DIR"

echo "building images in $DIR ..." >&2
python3 - <<'PY'
with open('sparse.raw', 'wb') as f:
    f.truncate(4 << 30)
    sector = b'\x5a' * 512
    for off in range(0, 4 << 30, 65536):
        f.seek(off)
        f.write(sector)
PY
qemu-img convert -O qcow2 sparse.raw big-64k.qcow2
rm -f sparse.raw
# 1 GiB of non-zero, compressible bytes.
python3 -c "
line = b'vmimage check bench line\\n' * 2622
with open('dense.raw', 'wb') as f:
    for _ in range(16384):
        f.write(line[:65536])
"
qemu-img convert -O qcow2 -o cluster_size=4k dense.raw dense-4k.qcow2
qemu-img convert -c -O qcow2 -o compression_type=zstd dense.raw zstd.qcow2
head -c 64M dense.raw > dense64.raw
qemu-img convert -O qcow2 -o cluster_size=512 dense64.raw dense-512.qcow2
rm -f dense.raw dense64.raw

# Median wall time in milliseconds of RUNS runs of the command (output discarded), timed in
# one Python process so that shell and `date` forks do not blur the numbers.
median_ms() {
    python3 - "$RUNS" "$@" <<'PY'
import statistics, subprocess, sys, time
runs, cmd = int(sys.argv[1]), sys.argv[2:]
times = []
for _ in range(runs):
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times.append((time.perf_counter() - t0) * 1000)
print(f"{statistics.median(times):.1f}")
PY
}

printf '%-16s %10s %14s %12s %8s\n' image "size(MiB)" "qemu-img(ms)" "vmimage(ms)" ratio
for img in big-64k.qcow2 dense-4k.qcow2 dense-512.qcow2 zstd.qcow2; do
    # Both must give the same counters before timing means anything.
    python3 - "$img" "$VMIMAGE" <<'PY'
import json, subprocess, sys
img, ours = sys.argv[1], sys.argv[2]
q = json.loads(subprocess.run(['qemu-img', 'check', '--output=json', img], capture_output=True).stdout)
v = json.loads(subprocess.run([ours, 'check', '--json', img], capture_output=True).stdout)
v.pop('findings', None)
if q != v:
    sys.exit(f'{img}: vmimage and qemu-img disagree: {q} vs {v}')
PY
    cat "$img" >/dev/null   # warm the page cache
    qemu_ms=$(median_ms qemu-img check "$img")
    ours_ms=$(median_ms "$VMIMAGE" check "$img")
    size=$(( $(stat -c %s "$img") >> 20 ))
    ratio=$(awk -v q="$qemu_ms" -v o="$ours_ms" 'BEGIN {printf "%.1fx", q / (o > 0 ? o : 0.001)}')
    printf '%-16s %10s %14s %12s %8s\n' "$img" "$size" "$qemu_ms" "$ours_ms" "$ratio"
done
