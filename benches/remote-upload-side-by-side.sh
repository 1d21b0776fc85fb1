#!/usr/bin/env bash
# `vmimage convert IN s3://...` (multipart upload to an S3 server on loopback) against `vmimage
# convert IN OUT` (a local file), on the same input, in one run: medians of RUNS runs each,
# and the ratio (target: the upload at most 1.3x the local conversion, issue 17).
#
# Input: the 4 GiB sparse raw ext4 image of benches/convert-side-by-side.sh (mkfs.ext4 -d of a
# system library folder, about 725 MB of data), built under $WORK unless it is there.
# Both conversions compute the default digests (md5, sha512): an upload always needs them.
# The server runs on the same 2 cores, so the upload's time includes the server's work.
#
# SERVER picks the server:
# - s3s-fs (default): s3s-fs 0.14.1 writes the parts to its data directory under $WORK and,
#   at completion, copies them into the object (a read, an MD5 and a write of every byte,
#   after the last part).
# - garage: a single-node Garage (replication_factor 1, sqlite metadata, compression off,
#   no fsync, as an S3 store keeps bytes), started in $WORK/garage. It keeps the parts as
#   its 1 MiB blocks (completion is metadata only), as S3, MinIO and Ceph RGW do. Garage
#   stores a block once per content hash, so a second upload of the same bytes would skip
#   every block write: each timed upload or PUT gets a Garage started afresh on an empty data
#   directory (outside the timing). Garage is AGPL-3.0: run as an external tool only.
#
#   benches/remote-upload-side-by-side.sh      # RUNS=3, SRC=/usr/lib/x86_64-linux-gnu
#   RUNS=5 KEEP=1 benches/remote-upload-side-by-side.sh
#   QUICK=1 benches/remote-upload-side-by-side.sh     # the raw->qcow2 row only
#   SERVER=garage GARAGE=/path/to/garage QUICK=1 RUNS=5 benches/remote-upload-side-by-side.sh
#
# Before the timed runs, each row checks that the stored objects are the local output's bytes
# (GET back and cmp) and that the MD5 and SHA-512 vmimage printed for the upload are the
# object's own (md5sum, sha512sum).
#
# Needs: s3s-fs 0.14.1 (cargo install s3s-fs --version 0.14.1 --locked --features binary), or
# Garage 2.5.0 for SERVER=garage (cargo install garage --version 2.5.0 --locked), mkfs.ext4,
# curl, a release build.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SRC=${SRC:-/usr/lib/x86_64-linux-gnu}
WORK=${WORK:-/tmp/vmimage-upload-bench}
VMIMAGE=${VMIMAGE:-target/release/vmimage}
SERVER=${SERVER:-s3s-fs}
S3S_FS=${S3S_FS:-$(command -v s3s-fs || echo "$HOME/.cargo/bin/s3s-fs")}
GARAGE=${GARAGE:-$(command -v garage || echo "$HOME/.cargo/bin/garage")}
case $SERVER in
    s3s-fs | garage) ;;
    *) echo "SERVER must be s3s-fs or garage, not $SERVER" >&2; exit 2 ;;
esac
[ -x "$VMIMAGE" ] || cargo build --release --quiet

mkdir -p "$WORK"
SERVER_PID=
cleanup() {
    [ -z "$SERVER_PID" ] || kill "$SERVER_PID" 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT

IMG=$WORK/disk.raw
if [ ! -f "$IMG" ]; then
    truncate -s 4G "$IMG"
    mkfs.ext4 -q -F -d "$SRC" "$IMG" 2>/dev/null || mkfs.ext4 -q -F -d "$SRC" "$IMG"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

PORT=$(free_port)
DATA=$WORK/s3
ACCESS_KEY=bench
SECRET_KEY=bench-secret
if [ "$SERVER" = garage ]; then
    # Garage's key ids and secrets are its own; an imported key needs 8+ and 16+ characters.
    ACCESS_KEY=GKbench0vmimage0upload
    SECRET_KEY=bench-secret-bench-secret
    RPC_PORT=$(free_port)
fi

# start_server: a server on an empty data directory, with bucket `bench` writable by the
# key; sets SERVER_PID.
start_server() {
    [ -z "$SERVER_PID" ] || { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }
    rm -rf "$DATA"
    if [ "$SERVER" = s3s-fs ]; then
        mkdir -p "$DATA/bench"
        "$S3S_FS" --host 127.0.0.1 --port "$PORT" --access-key "$ACCESS_KEY" \
            --secret-key "$SECRET_KEY" "$DATA" >/dev/null 2>&1 &
        SERVER_PID=$!
        wait_port "$PORT"
        return
    fi
    mkdir -p "$DATA/meta" "$DATA/data"
    # One node, one copy; no zstd (an S3 server stores the bytes it is given), no fsync
    # (s3s-fs and the local conversion do not sync either), no scrub in the background.
    cat >"$DATA/garage.toml" <<CONF
metadata_dir = "$DATA/meta"
data_dir = "$DATA/data"
db_engine = "sqlite"
replication_factor = 1
compression_level = "none"
metadata_fsync = false
data_fsync = false
disable_scrub = true
rpc_bind_addr = "127.0.0.1:$RPC_PORT"
rpc_public_addr = "127.0.0.1:$RPC_PORT"
rpc_secret = "$(printf '%064d' 17)"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$PORT"
CONF
    RUST_LOG=warn "$GARAGE" -c "$DATA/garage.toml" server >"$DATA/garage.log" 2>&1 &
    SERVER_PID=$!
    wait_port "$PORT"
    wait_port "$RPC_PORT"
    local g=("$GARAGE" -c "$DATA/garage.toml") id
    id=$("${g[@]}" node id -q 2>/dev/null | cut -d@ -f1)
    {
        "${g[@]}" layout assign -z dc1 -c 1G "$id"
        "${g[@]}" layout apply --version 1
        "${g[@]}" key import --yes -n bench "$ACCESS_KEY" "$SECRET_KEY"
        "${g[@]}" bucket create bench
        "${g[@]}" bucket allow --read --write --owner --key bench bench
    } >"$DATA/setup.log" 2>&1 || { cat "$DATA/setup.log" >&2; exit 1; }
}

start_server
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=$ACCESS_KEY \
    AWS_SECRET_ACCESS_KEY=$SECRET_KEY AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
SIGV4=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "$ACCESS_KEY:$SECRET_KEY" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")

echo "input: $IMG, $(du -k "$IMG" | cut -f1) KiB allocated of $(stat -c %s "$IMG") bytes"
if [ "$SERVER" = s3s-fs ]; then
    echo "s3s-fs $("$S3S_FS" --version | awk '{print $2}') on 127.0.0.1:$PORT, data in $DATA"
else
    echo "$("$GARAGE" --version | head -1) on 127.0.0.1:$PORT (single node, sqlite, no compression), data in $DATA"
fi
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc), runs: $RUNS (median)"

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
# CPU seconds (user+sys) the server has used so far, from /proc/PID/stat (fields 14 and 15,
# in clock ticks).
server_cpu() {
    awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$SERVER_PID/stat"
}
# Garage finishes some work of a request (block reference counts, table updates) after it
# answered: its CPU is read again this long after the command ended.
SETTLE=0
[ "$SERVER" = garage ] && SETTLE=0.5
# timed CMD: runs CMD, writes "WALL CPU SERVER_CPU" to $WORK/result: its wall time, its own
# user+sys, and the server's user+sys meanwhile (both matter on a shared 2-core machine: the server checks every
# part's SHA-256, computes its MD5 and stores it; s3s-fs at completion reads, MD5s and
# concatenates the parts again). CMD's standard output goes to $WORK/out.
timed() {
    local s0 s1
    s0=$(server_cpu)
    /usr/bin/time -f "%e %U %S" -o "$WORK/time" bash -c "$1" >"$WORK/out"
    sleep "$SETTLE"
    s1=$(server_cpu)
    awk -v s0="$s0" -v s1="$s1" '{printf "%s %.2f %.2f\n", $1, $2 + $3, s1 - s0}' "$WORK/time" \
        >"$WORK/result"
}
# get KEY FILE: the object's bytes, as the server serves them.
get() { curl -sSf "${SIGV4[@]}" -o "$2" "$AWS_ENDPOINT_URL/bench/$1"; }

LOCAL=$WORK/local.out
FETCHED=$WORK/fetched.out
# The path a pipeline takes without vmimage's upload: convert to a local file, then send that
# file with another client (curl --aws-sigv4, one PUT: the server stores one object, nothing
# to assemble at completion; the cheapest upload a server offers).
printf '\n%-26s %21s %33s %31s %7s %7s\n' "" "local (wall cpu)" "upload (wall cpu server-cpu)" \
    "local+curl PUT (wall cpu srv)" "ratio" "vs PUT"
# pair NAME OPTIONS : RUNS timed runs of each (alternating which goes first), after one
# untimed run of each; the previous output is deleted (Garage: a fresh server) and `sync` run
# before each.
pair() {
    local name=$1 opts=$2 i l u p lw=() lc=() uw=() uc=() us=() pw=() pc=() ps=()
    # Not in a subshell: start_server sets SERVER_PID for the next measurement.
    run_l() { rm -f "$LOCAL"; sync; timed "$VMIMAGE convert $IMG $LOCAL $opts"; l=$(cat "$WORK/result"); }
    run_u() {
        if [ "$SERVER" = garage ]; then start_server; else rm -rf "$DATA/bench/disk"; fi
        sync
        timed "$VMIMAGE convert $IMG s3://bench/disk $opts"
        u=$(cat "$WORK/result")
    }
    run_p() {
        rm -f "$LOCAL"
        if [ "$SERVER" = garage ]; then start_server; else rm -rf "$DATA/bench/put"; fi
        sync
        timed "$VMIMAGE convert $IMG $LOCAL $opts && curl -sSf ${SIGV4[*]@Q} -T $LOCAL $AWS_ENDPOINT_URL/bench/put"
        p=$(cat "$WORK/result")
    }
    run_l
    run_u
    # The digests vmimage printed for the upload, against the object's own bytes.
    local md5 sha512
    md5=$(sed -n 's/^MD5 (.*) = //p' "$WORK/out")
    sha512=$(sed -n 's/^SHA512 (.*) = //p' "$WORK/out")
    get disk "$FETCHED"
    if [ "$name" != "raw->vmdk streamOptimized" ]; then
        # A streamOptimized VMDK carries its creation time: two conversions differ.
        cmp -s "$LOCAL" "$FETCHED" || { echo "$name: the object differs from the local output" >&2; exit 1; }
    fi
    [ "$md5" = "$(md5sum <"$FETCHED" | cut -d' ' -f1)" ] \
        || { echo "$name: the upload's MD5 ($md5) is not the object's" >&2; exit 1; }
    [ "$sha512" = "$(sha512sum <"$FETCHED" | cut -d' ' -f1)" ] \
        || { echo "$name: the upload's SHA-512 is not the object's" >&2; exit 1; }
    run_p
    get put "$FETCHED"
    cmp -s "$LOCAL" "$FETCHED" || { echo "$name: the curl PUT baseline did not store the file" >&2; exit 1; }
    rm -f "$FETCHED"
    for i in $(seq "$RUNS"); do
        if [ $((i % 2)) = 1 ]; then
            run_l; run_u; run_p
        else
            run_p; run_u; run_l
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
