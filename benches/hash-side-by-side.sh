#!/usr/bin/env bash
# Times `vmimage hash` (md5 + sha512, the default) against the peer tools on one warm file, in
# one run, interleaved, and prints medians (wall, user and system CPU) and the ratios issues 3
# and 20 name.
#
#   benches/hash-side-by-side.sh [FILE] [REPETITIONS]
#
# FILE defaults to a 2 GiB file of random bytes made under /tmp (and deleted at the end);
# REPETITIONS defaults to 5. The file is read once before timing so that every tool reads it
# from the page cache. Tools: vmimage hash; md5sum then sha512sum; rhash --md5 --sha512;
# openssl dgst -md5; openssl dgst -sha512; openssl dgst -md5 and -sha512 as two processes at
# once (what a user without vmimage would run on two cores). Runs are interleaved (one of each
# per round) so that a change in machine load hits every tool alike; the medians are over the
# rounds. User and system times are the children's CPU times (getrusage), medians too.
# TOOLS="vmimage openssl-pair openssl-md5 openssl-sha512" times only the tools named;
# VMIMAGE=path times that binary instead of building target/release/vmimage.
# Needs: cargo, coreutils, openssl, rhash (apt-get install rhash), python3.
set -euo pipefail
cd "$(dirname "$0")/.."

reps=${2:-5}
made=""
if [[ $# -ge 1 && -n "$1" ]]; then
    file=$1
else
    file=$(mktemp /tmp/vmimage-hash-bench.XXXXXX)
    made=$file
    echo "making a 2 GiB file of random bytes at $file" >&2
    head -c $((2 << 30)) /dev/urandom >"$file"
fi
cleanup() { [[ -n "$made" ]] && rm -f "$made"; }
trap cleanup EXIT

for tool in md5sum sha512sum openssl rhash python3; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is required" >&2; exit 1; }
done
if [[ -n "${VMIMAGE:-}" ]]; then
    vmimage=$VMIMAGE # a binary built beforehand (while cargo is busy elsewhere, say)
else
    cargo build --release --quiet
    vmimage=target/release/vmimage
fi

cat "$file" >/dev/null # warm the page cache

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs" >&2
python3 - "$file" "$reps" "$vmimage" <<'PY'
import os, resource, shlex, statistics, subprocess, sys, time

path, reps, vmimage = sys.argv[1], int(sys.argv[2]), sys.argv[3]
f = shlex.quote(path)
commands = {
    "vmimage": f"{vmimage} hash {f}",
    "coreutils": f"md5sum {f} && sha512sum {f}",
    "rhash": f"rhash --md5 --sha512 {f}",
    "openssl-md5": f"openssl dgst -md5 {f}",
    "openssl-sha512": f"openssl dgst -sha512 {f}",
    # The two OpenSSL digests as two processes at once: each reads the file itself, and the
    # pair takes as long as the slower of the two once both share the cores.
    "openssl-pair": f"openssl dgst -md5 {f} & openssl dgst -sha512 {f}; wait",
}
# TOOLS="vmimage openssl-pair ..." times only those (the ratios need the tools they name).
if os.environ.get("TOOLS"):
    commands = {k: v for k, v in commands.items() if k in os.environ["TOOLS"].split()}
wall, user, system = {}, {}, {}
for round_ in range(1, reps + 1):
    for name, command in commands.items():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        subprocess.run(["bash", "-c", command], stdout=subprocess.DEVNULL, check=True)
        end = time.monotonic()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall.setdefault(name, []).append(end - start)
        user.setdefault(name, []).append(after.ru_utime - before.ru_utime)
        system.setdefault(name, []).append(after.ru_stime - before.ru_stime)
    print(f"round {round_}/{reps} done, load average {os.getloadavg()[0]:.2f}", file=sys.stderr)

size = os.path.getsize(path)
med = {k: statistics.median(v) for k, v in wall.items()}
print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
print(f"file: {path} ({size / 2**30:.2f} GiB), {reps} interleaved rounds, medians:")
print(f"  {'tool':<15} {'wall':>7}  {'MB/s':>6}  {'user':>6}  {'sys':>5}   wall of every round")
for name in commands:
    rounds = " ".join(f"{t:.2f}" for t in wall[name])
    print(f"  {name:<15} {med[name]:6.2f}s  {size / med[name] / 1e6:6.0f}  "
          f"{statistics.median(user[name]):5.2f}s  {statistics.median(system[name]):4.2f}s   ({rounds})")
print("ratios of medians:")
if "vmimage" in med and "openssl-pair" in med:
    print(f"  vmimage / openssl pair at once   = {med['vmimage'] / med['openssl-pair']:.3f}   (target <= 1.05)")
if "vmimage" in med and "openssl-md5" in med and "openssl-sha512" in med:
    slower = max(med["openssl-md5"], med["openssl-sha512"])
    print(f"  vmimage / slower openssl alone   = {med['vmimage'] / slower:.3f}   (target <= 1.10)")
if "vmimage" in med and "rhash" in med:
    print(f"  rhash / vmimage                  = {med['rhash'] / med['vmimage']:.2f}")
if "vmimage" in med and "coreutils" in med:
    print(f"  coreutils pair / vmimage         = {med['coreutils'] / med['vmimage']:.2f}")
PY
