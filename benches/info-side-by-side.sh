#!/usr/bin/env bash
# Side by side: `vmimage info --json` against `qemu-img info --output=json` on the same
# multi-GiB images, in one run, with hyperfine (apt-get install hyperfine). Prints the median of
# each and the ratio qemu-img / vmimage (above 1 means vmimage is faster).
#
#   benches/info-side-by-side.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$(mktemp -d /tmp/vmimage-info-bench.XXXXXX)}
mkdir -p "$work"
cargo build --release --quiet
bin=$PWD/target/release/vmimage

[ -f "$work/big.qcow2" ] || qemu-img create -q -f qcow2 -o preallocation=metadata "$work/big.qcow2" 64G
if [ ! -f "$work/data.qcow2" ]; then
    # 4 GiB of guest data in 64 KiB clusters, written by qemu-io: a real multi-GiB image.
    qemu-img create -q -f qcow2 "$work/data.qcow2" 8G
    # (qemu-io refuses one request of 4 GiB: four of 1 GiB.)
    qemu-io -c "write -P 0x5a 0 1G" -c "write -P 0x5a 1G 1G" -c "write -P 0x5a 2G 1G" \
        -c "write -P 0x5a 3G 1G" "$work/data.qcow2" >/dev/null
fi
[ -f "$work/big.raw" ] || qemu-img create -q -f raw "$work/big.raw" 64G

for img in big.qcow2 data.qcow2 big.raw; do
    out=$work/$img.json
    hyperfine --style none --warmup 5 --runs 50 -N --export-json "$out" \
        "$bin info --json $work/$img" \
        "qemu-img info --output=json $work/$img" >/dev/null
    python3 - "$out" "$img" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
ours, qemu = r[0]["median"], r[1]["median"]
print(f"{sys.argv[2]:12} vmimage {ours*1e3:7.2f} ms   qemu-img {qemu*1e3:7.2f} ms   ratio qemu-img/vmimage {qemu/ours:5.1f}x")
PY
done
echo "images kept in $work (delete when done)"
