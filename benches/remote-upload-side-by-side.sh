#!/usr/bin/env bash
# `vmimage convert IN s3://...` (multipart upload to s3s-fs on loopback) against `vmimage
# convert IN OUT` (a local file), on the same input, in one run: medians of RUNS runs each,
# and the ratio (target: the upload at most 1.3x the local conversion, issue 17).
#
# Input: the 4 GiB sparse raw ext4 image of benches/convert-side-by-side.sh (mkfs.ext4 -d of a
# system library folder, about 725 MB of data), built under $WORK unless it is there.
# Both conversions compute the default digests (md5, sha512): an upload always needs them.
# The server writes the parts to its data directory under $WORK and concatenates them at
# completion (s3s-fs 0.14.1), so the upload's time includes the server's work on the same
# 2 cores.
#
#   benches/remote-upload-side-by-side.sh      # RUNS=3, SRC=/usr/lib/x86_64-linux-gnu
#   RUNS=5 KEEP=1 benches/remote-upload-side-by-side.sh
#   QUICK=1 benches/remote-upload-side-by-side.sh     # the raw->qcow2 row only
#
# Needs: s3s-fs 0.14.1 (cargo install s3s-fs --version 0.14.1 --locked --features binary),
# mkfs.ext4, a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SRC=${SRC:-/usr/lib/x86_64-linux-gnu}
WORK=${WORK:-/tmp/vmimage-upload-bench}
VMIMAGE=${VMIMAGE:-target/release/vmimage}
S3S_FS=${S3S_FS:-$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")}
[ -x "$VMIMAGE" ] || cargo build --release --quiet

mkdir -p "$WORK"
SERVER=
cleanup() {
    [ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

IMG=$WORK/disk.raw
if [ ! -f "$IMG" ]; then
    truncate -s 4G "$IMG"
    mkfs.ext4 -q -F -d "$SRC" "$IMG" 2>/dev/null || mkfs.ext4 -q -F -d "$SRC" "$IMG"
fi

DATA=$WORK/s3
rm -rf "$DATA"
mkdir -p "$DATA/bench"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$S3S_FS" --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key bench-secret "$DATA" \
    >/dev/null 2>&1 &
SERVER=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.05
done
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=bench \
    AWS_SECRET_ACCESS_KEY=bench-secret AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true

echo "input: $IMG, $(du -k "$IMG" | cut -f1) KiB allocated of $(stat -c %s "$IMG") bytes"
echo "s3s-fs $("$S3S_FS" --version | awk '{print $2}') on 127.0.0.1:$PORT, data in $DATA"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc), runs: $RUNS (median)"

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# CPU seconds (user+sys) the server has used so far, from /proc/PID/stat (fields 14 and 15,
# in clock ticks).
server_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$SERVER/stat"
}
# timed CMD: runs CMD, prints "WALL CPU SERVER_CPU": its wall time, its own user+sys, and the
# server's user+sys meanwhile (both matter on a shared 2-core machine: the server checks every
# part's SHA-256, computes its MD5, writes it, and at completion reads, MD5s and concatenates
# the parts again).
timed() {
    local s0 s1
    s0=$(server_cpu)
    /usr/bin/time -f "%e %U %S" -o "$WORK/time" bash -c "$1" >/dev/null
    s1=$(server_cpu)
    awk -v s0="$s0" -v s1="$s1" '{printf "%s %.2f %.2f\n", $1, $2 + $3, s1 - s0}' "$WORK/time"
}

LOCAL=$WORK/local.out
# The path a pipeline takes without vmimage's upload: convert to a local file, then send that
# file with another client (curl --aws-sigv4, one PUT, so the server neither stores parts nor
# concatenates them at completion: the cheapest upload s3s-fs offers).
SIGV4=(--aws-sigv4 "aws:amz:us-east-1:s3" --user bench:bench-secret -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
printf '\n%-26s %21s %33s %31s %7s %7s\n' "" "local (wall cpu)" "upload (wall cpu server-cpu)" \
    "local+curl PUT (wall cpu srv)" "ratio" "vs PUT"
# pair NAME OPTIONS : RUNS timed runs of each (alternating which goes first), after one
# untimed run of each; the previous output is deleted and `sync` run before each.
pair() {
    local name=$1 opts=$2 i l u p lw=() lc=() uw=() uc=() us=() pw=() pc=() ps=()
    run_l() { rm -f "$LOCAL"; sync; timed "$VMIMAGE convert $IMG $LOCAL $opts"; }
    run_u() { rm -rf "$DATA/bench/disk"; sync; timed "$VMIMAGE convert $IMG s3://bench/disk $opts"; }
    run_p() {
        rm -f "$LOCAL" "$DATA/bench/put"
        sync
        timed "$VMIMAGE convert $IMG $LOCAL $opts && curl -sSf ${SIGV4[*]@Q} -T $LOCAL $AWS_ENDPOINT_URL/bench/put"
    }
    run_l >/dev/null
    run_u >/dev/null
    run_p >/dev/null
    cmp -s "$LOCAL" "$DATA/bench/put" || { echo "$name: the curl PUT baseline did not store the file" >&2; exit 1; }
    cmp -s "$LOCAL" "$DATA/bench/disk" || [ "$name" = "raw->vmdk streamOptimized" ] \
        || { echo "$name: the object differs from the local output" >&2; exit 1; }
    for i in $(seq "$RUNS"); do
        if [ $((i % 2)) = 1 ]; then
            l=$(run_l); u=$(run_u); p=$(run_p)
        else
            p=$(run_p); u=$(run_u); l=$(run_l)
        fi
        [ "${VERBOSE:-0}" = 1 ] && echo "  run $i: local $l / upload $u / local+PUT $p" >&2
        read -r a b <<<"$l"; lw+=("$a"); lc+=("$b")
        read -r a b c <<<"$u"; uw+=("$a"); uc+=("$b"); us+=("$c")
        read -r a b c <<<"$p"; pw+=("$a"); pc+=("$b"); ps+=("$c")
    done
    local mlw muw mpw
    mlw=$(median "${lw[@]}")
    muw=$(median "${uw[@]}")
    mpw=$(median "${pw[@]}")
    printf '%-26s %9.2fs %9.2fs %9.2fs %9.2fs %9.2fs %9.2fs %9.2fs %9.2fs %6.2fx %6.2fx\n' "$name" \
        "$mlw" "$(median "${lc[@]}")" "$muw" "$(median "${uc[@]}")" "$(median "${us[@]}")" \
        "$mpw" "$(median "${pc[@]}")" "$(median "${ps[@]}")" \
        "$(echo "$muw / $mlw" | bc -l)" "$(echo "$muw / $mpw" | bc -l)"
}

pair "raw->qcow2" "-O qcow2"
if [ "${QUICK:-0}" != 1 ]; then
    pair "raw->qcow2 -c zstd" "-O qcow2 -c zstd"
    pair "raw->vmdk streamOptimized" "-O vmdk"
fi
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
