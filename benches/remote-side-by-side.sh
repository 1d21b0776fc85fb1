#!/usr/bin/env bash
# Remote reads side by side, on loopback (issue 17, "Speed"): `vmimage hash` of a 2 GiB object
# on s3s-fs 0.14.1 against a plain streaming GET of the same object from the same server
# (curl --aws-sigv4, to /dev/null) and against `vmimage hash` of the local file; then `info` of
# a 6 GiB qcow2 object (wall time). Medians of RUNS runs (default 5), in alternating order,
# each with its own user+sys CPU and the server's: the machine may be shared, so report the
# load (printed) beside the medians.
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

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
# The server's user+sys CPU seconds so far (/proc/PID/stat fields 14 and 15, in ticks).
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$S3_PID/stat"; }
# timed CMD...: "WALL CPU SERVER_CPU" of one run: wall time, the command's own user+sys, and
# the server's user+sys meanwhile (on 2 shared cores the server's work competes with the
# digests').
timed() {
    local s0 s1
    s0=$(server_cpu)
    /usr/bin/time -f "%e %U %S" -o "$WORK/time" "$@" >/dev/null
    s1=$(server_cpu)
    awk -v s0="$s0" -v s1="$s1" '{printf "%s %.2f %.2f\n", $1, $2 + $3, s1 - s0}' "$WORK/time"
}
SIGV4=(--aws-sigv4 "aws:amz:us-east-1:s3" --user bench:bench-secret -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
curl -sSf "${SIGV4[@]}" -r 0-0 -o /dev/null "$AWS_ENDPOINT_URL/bench/big.raw" || { echo "the curl baseline GET fails" >&2; exit 1; }
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc), runs: $RUNS (medians; wall, own user+sys, server user+sys)"
: >"$WORK/get"; : >"$WORK/s3"; : >"$WORK/local"
# Alternating order, so that a change of load hits all three alike; one untimed run each
# first (the page cache holds both 2 GiB files after it).
curl -sf "${SIGV4[@]}" -o /dev/null "$AWS_ENDPOINT_URL/bench/big.raw"; "$VMIMAGE" hash "s3://bench/big.raw" >/dev/null; "$VMIMAGE" hash "$WORK/local.raw" >/dev/null
for i in $(seq "$RUNS"); do
    if [ $((i % 2)) = 1 ]; then order="get s3 local"; else order="local s3 get"; fi
    for c in $order; do
        case $c in
            get) timed curl -sf "${SIGV4[@]}" -o /dev/null "$AWS_ENDPOINT_URL/bench/big.raw" >>"$WORK/get" ;;
            s3) timed "$VMIMAGE" hash "s3://bench/big.raw" >>"$WORK/s3" ;;
            local) timed "$VMIMAGE" hash "$WORK/local.raw" >>"$WORK/local" ;;
        esac
    done
done
col() { awk -v c="$2" '{print $c}' "$WORK/$1" | median; }
GET=$(col get 1); HASH_S3=$(col s3 1); HASH_LOCAL=$(col local 1)
INFO=$(for _ in $(seq "$RUNS"); do timed "$VMIMAGE" info "s3://bench/big.qcow2"; done | awk '{print $1}' | median)
printf '%-48s %8s %8s %8s\n' "" wall cpu server
printf '%-48s %8.2f %8.2f %8.2f\n' "plain streaming GET (curl --aws-sigv4), 2 GiB" "$GET" "$(col get 2)" "$(col get 3)"
printf '%-48s %8.2f %8.2f %8.2f  ratio to GET: %.2f\n' "vmimage hash s3:// (md5+sha512), 2 GiB" "$HASH_S3" "$(col s3 2)" "$(col s3 3)" "$(echo "$HASH_S3 / $GET" | bc -l)"
printf '%-48s %8.2f %8.2f %8s  s3 ratio to local: %.2f\n' "vmimage hash of the local file" "$HASH_LOCAL" "$(col local 2)" - "$(echo "$HASH_S3 / $HASH_LOCAL" | bc -l)"
printf '%-48s %8.2f\n' "vmimage info s3:// of a 6 GiB qcow2" "$INFO"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
