#!/usr/bin/env bash
# Interleaved A/B of two fathomd binaries on this machine: the way to tell whether a change
# to the engine pays, on a machine whose speed drifts between minutes. Both daemons run at
# once (one reactor each, both pinned to CPU 0, the idle one costs nothing: it waits in
# io_uring), and each round measures A then B, so drift hits both alike.
#
#   scripts/benchmark-ab.sh OLD_FATHOMD NEW_FATHOMD [ROUNDS] [-- fathom-perf run args...]
#
# Defaults: 5 rounds of 3 s, 4 KiB random read QD32 on a memory namespace (nsid 2; nsid 1 is
# null, 3 a page-cached file, 4 the same file with O_DIRECT, 5 a copy of it on /dev/shm, 6 a
# clone namespace of the file, whose host — fathom-perf's host NQN — has written nothing yet).
# Prints each round and the medians with the ratio B/A.
# A_ARGS / B_ARGS: extra fathomd options for one side (e.g. B_ARGS="--send-zc always").
# Needs fathom-perf built (swift build -c release --product fathom-perf).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OLD=$1 NEW=$2; shift 2
ROUNDS=5
if [[ $# -gt 0 && $1 =~ ^[0-9]+$ ]]; then ROUNDS=$1; shift; fi
if [[ ${1:-} == -- ]]; then shift; fi
ARGS=("$@"); [[ ${#ARGS[@]} -eq 0 ]] && ARGS=(--nsid 2 -q 32 -o 4096 -w randread)
PERF=.build/release/fathom-perf
WORK=$(mktemp -d /tmp/fathom-ab-XXXXXX)
PIDS=()
SHM=/dev/shm/fathom-ab-$$.img
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK" "$SHM"; }
trap cleanup EXIT
NQN=nqn.2026-11.io.fathom:ab
truncate -s 1G "$WORK/file.img"
dd if=/dev/urandom of="$WORK/file.img" bs=1M count=1024 conv=notrunc status=none
cp "$WORK/file.img" "$SHM"
# Out of the page cache: O_DIRECT reads (nsid 4) of cached ranges would first have to
# invalidate them, which io_uring hands to its worker threads. The buffered namespace (nsid 3)
# is measured on a warm cache instead, as the benchmark's buffered rows are.
if [[ " ${ARGS[*]} " == *" --nsid 3 "* || " ${ARGS[*]} " == *" --nsid 6 "* ]]; then
    cat "$WORK/file.img" > /dev/null
else
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$WORK/file.img"
fi
for side in a b; do
    port=$([[ $side == a ]] && echo 24521 || echo 24522)
    cat > "$WORK/$side.json" <<JSON
{"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "$port", "trtype": "tcp"}, "portid": 1, "subsystems": ["$NQN"]}],
 "subsystems": [{"nqn": "$NQN", "attr": {"allow_any_host": "1"}, "namespaces": [
   {"nsid": 1, "device": {"backend": "null", "size": "16G"}},
   {"nsid": 2, "device": {"backend": "memory", "size": "1G"}},
   {"nsid": 3, "device": {"path": "$WORK/file.img"}},
   {"nsid": 4, "device": {"path": "$WORK/file.img", "direct_io": "1", "uuid": "7d0c6f0e-1c1a-4b4e-8a55-0c3f6a1e2d46", "nguid": "9e41d2b7a3c84f0b9d6e1a2b3c4d5e70"}},
   {"nsid": 5, "device": {"path": "$SHM"}},
   {"nsid": 6, "device": {"backend": "clone", "path": "$WORK/file.img", "overlay_dir": "$WORK/$side-overlays", "uuid": "2b8e5f1a-6c3d-4e7f-9a0b-1c2d3e4f5a6b", "nguid": "4f6a8c0e2b4d6f8091a3c5e7f9b1d3e5"}}]}]}
JSON
done
taskset -c 0 "$OLD" --config "$WORK/a.json" --reactors 1 --log-level warning --state-dir "$WORK/sa" --control-socket "$WORK/a.sock" ${A_ARGS:-} & PIDS+=($!)
taskset -c 0 "$NEW" --config "$WORK/b.json" --reactors 1 --log-level warning --state-dir "$WORK/sb" --control-socket "$WORK/b.sock" ${B_ARGS:-} & PIDS+=($!)
for port in 24521 24522; do
    for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done
for r in $(seq 1 "$ROUNDS"); do
    for side in a b; do
        port=$([[ $side == a ]] && echo 24521 || echo 24522)
        line=$(taskset -c 1 $PERF run --port $port --nqn $NQN "${ARGS[@]}" -t 3 --warmup 1 --json)
        echo "$side $line"
    done
done | python3 -c '
import json, statistics, sys
rows = {"a": [], "b": []}
for line in sys.stdin:
    side, _, js = line.partition(" ")
    r = json.loads(js)
    rows[side].append(r)
    print("%s  %9.0f IOPS  %7.1f MiB/s  p50 %6.1f us" % (side.upper(), r["iops"], r["mib_s"], r["lat_p50_us"]))
a = statistics.median(r["iops"] for r in rows["a"]); b = statistics.median(r["iops"] for r in rows["b"])
print("median IOPS  A %.0f  B %.0f  B/A %.2f" % (a, b, b / a))
pa = statistics.median(r["lat_p50_us"] for r in rows["a"]); pb = statistics.median(r["lat_p50_us"] for r in rows["b"])
print("median p50   A %.1f us  B %.1f us" % (pa, pb))'
