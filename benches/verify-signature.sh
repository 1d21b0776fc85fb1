#!/usr/bin/env bash
# Times `vmimage verify` of a signed image with and without the signature check, on one warm
# file, interleaved round by round, and prints medians and the ratio (issue 18: at most 1.05).
#
#   benches/verify-signature.sh [FILE] [REPETITIONS]
#
# FILE defaults to a 2 GiB file of random bytes made under /tmp (and deleted at the end);
# REPETITIONS defaults to 5. An RSA-2048 key and certificate are made with openssl, the sidecar
# (checksum, os_hash_value, img_signature*) with `vmimage metadata --sign-key`. Rows:
#   without   verify FILE --against SIDECAR                       (md5 + sha512; signature skipped)
#   SHA-512   verify FILE --against SIDECAR --signing-cert CERT   (the signature reuses sha512)
#   SHA-256   the same with a SHA-256 signature                    (sha256 joins the same read)
# Wall and CPU (user + system) medians: on a shared machine the CPU time is the steadier measure
# of the work done. Needs: cargo, openssl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

reps=${2:-5}
work=$(mktemp -d /tmp/vmimage-sign-bench.XXXXXX)
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
if [[ $# -ge 1 && -n "$1" ]]; then
    file=$1
else
    file=$work/disk.img
    echo "making a 2 GiB file of random bytes at $file" >&2
    head -c $((2 << 30)) /dev/urandom >"$file"
fi

cargo build --release --quiet
vmimage=target/release/vmimage
openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj /CN=bench \
    -keyout "$work/k.pem" -out "$work/c.pem" 2>/dev/null
for method in SHA-512 SHA-256; do
    "$vmimage" metadata "$file" --target glance --name bench --sign-key "$work/k.pem" \
        --cert-uuid u --hash-method "$method" --sidecar "$work/$method.json" >/dev/null 2>&1
done
cat "$file" >/dev/null # warm the page cache

python3 - "$vmimage" "$file" "$work" "$reps" <<'PY'
import os, statistics, subprocess, sys, time
vmimage, file, work, reps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rows = {
    "without": [vmimage, "verify", file, "--against", f"{work}/SHA-512.json"],
    "SHA-512": [vmimage, "verify", file, "--against", f"{work}/SHA-512.json", "--signing-cert", f"{work}/c.pem"],
    "SHA-256": [vmimage, "verify", file, "--against", f"{work}/SHA-256.json", "--signing-cert", f"{work}/c.pem"],
}
times = {k: [] for k in rows}
cpu = {k: [] for k in rows}
for _ in range(reps):
    for name, cmd in rows.items():
        start, before = time.monotonic(), os.times()
        out = subprocess.run(cmd, capture_output=True, text=True)
        after = os.times()
        times[name].append(time.monotonic() - start)
        cpu[name].append(after.children_user + after.children_system
                         - before.children_user - before.children_system)
        status = "verified" if out.returncode == 0 else f"exit {out.returncode}"
        if name != "without" and "signature" in out.stdout and "pass" not in out.stdout.split("signature", 1)[1].split("\n", 1)[0]:
            sys.exit(f"{name}: the signature check did not pass:\n{out.stdout}")
        if out.returncode not in (0, 1):
            sys.exit(f"{name}: {status}\n{out.stderr}")
base = statistics.median(times["without"])
base_cpu = statistics.median(cpu["without"])
print(f"{'row':<10} {'wall':>8} {'ratio':>6} {'cpu':>8} {'ratio':>6}   wall of each round")
for name, t in times.items():
    m, c = statistics.median(t), statistics.median(cpu[name])
    print(f"{name:<10} {m:7.2f}s {m / base:6.3f} {c:7.2f}s {c / base_cpu:6.3f}   "
          + " ".join(f"{x:.2f}" for x in t))
PY
