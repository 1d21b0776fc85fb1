#!/usr/bin/env bash
# Remote reads side by side, on loopback (issue 17, "Speed"): `vmimage hash` of a 2 GiB object
# on s3s-fs 0.14.1 against a plain streaming GET of the same object from the same server
# (curl --aws-sigv4, to /dev/null) and against `vmimage hash` of the local file; then `info` of
# a 6 GiB qcow2 object (wall time). Medians of RUNS runs (default 5). The machine may be shared:
# report medians and say so.
#
#   cargo build --release && benches/remote-side-by-side.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-5}"
VMIMAGE="$PWD/target/release/vmimage"
S3S="$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")"
WORK="$(mktemp -d)"
trap 'kill "${S3_PID:-0}" 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir -p "$WORK/data/bench"
PORT="$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')"
"$S3S" --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key bench-secret "$WORK/data" >"$WORK/s3.log" 2>&1 &
S3_PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.05; done
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret \
       AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true

# The 2 GiB object: incompressible bytes, placed as s3s-fs stores objects (a file in the bucket
# directory) with its ETag precomputed (else s3s-fs computes an MD5 at every request).
head -c 2G /dev/urandom >"$WORK/data/bench/big.raw"
cp "$WORK/data/bench/big.raw" "$WORK/local.raw"
b64() { printf %s "$1" | base64 -w0 | tr '+/' '-_' | tr -d '='; }
ETAG="$(md5sum "$WORK/local.raw" | cut -d' ' -f1)"
printf '{"e_tag":"%s"}' "$ETAG" >"$WORK/data/.bucket-$(b64 bench).object-$(b64 big.raw).internal.json"
qemu-img create -q -f qcow2 -o preallocation=metadata "$WORK/data/bench/big.qcow2" 6G
printf '{"e_tag":"%s"}' 0123456789abcdef0123456789abcdef >"$WORK/data/.bucket-$(b64 bench).object-$(b64 big.qcow2).internal.json"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
timed() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
run() { for _ in $(seq "$RUNS"); do timed "$@"; done | median; }

curl -sSf --aws-sigv4 "aws:amz:us-east-1:s3" --user bench:bench-secret -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -r 0-0 -o /dev/null "$AWS_ENDPOINT_URL/bench/big.raw" || { echo "the curl baseline GET fails" >&2; exit 1; }
GET=$(run curl -sf --aws-sigv4 "aws:amz:us-east-1:s3" --user bench:bench-secret -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -o /dev/null "$AWS_ENDPOINT_URL/bench/big.raw")
HASH_S3=$(run "$VMIMAGE" hash "s3://bench/big.raw")
HASH_LOCAL=$(run "$VMIMAGE" hash "$WORK/local.raw")
INFO=$(run "$VMIMAGE" info "s3://bench/big.qcow2")
echo "runs: $RUNS (medians, seconds)"
echo "plain streaming GET (curl --aws-sigv4) of 2 GiB: $GET"
echo "vmimage hash s3:// (md5+sha512) of 2 GiB:        $HASH_S3  ratio to GET: $(echo "scale=2; $HASH_S3 / $GET" | bc)"
echo "vmimage hash of the local file:                   $HASH_LOCAL  s3 ratio to local: $(echo "scale=2; $HASH_S3 / $HASH_LOCAL" | bc)"
echo "vmimage info s3:// of a 6 GiB qcow2:             $INFO"
