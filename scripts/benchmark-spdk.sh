#!/usr/bin/env bash
# Fathom against SPDK's own NVMe/TCP target, side by side in one run on this machine:
#   spdk       - SPDK nvmf_tgt, one reactor (polling), a RAM (malloc) bdev of 1 GiB
#   fathom     - fathomd --reactors 1, a memory namespace of 1 GiB
#   fathom-shm, spdk-shm - (TARGETS="spdk fathom spdk-shm fathom-shm") a 1 GiB file on /dev/shm:
#                a Fathom file namespace, and SPDK's AIO bdev (bdev_aio_create) on the same file
#   spdk-intr  - (TARGETS="spdk spdk-intr fathom") nvmf_tgt with --interrupt-mode; measured here
#                it still used 100% of its core while idle (its TCP and bdev pollers kept polling)
# Each target runs alone, pinned to CPU 0; the load comes from CPU 1, from SPDK's own
# initiator (spdk_nvme_perf, polling) and from fathom-perf. Workloads: 4 KiB random read
# QD32, 128 KiB sequential read QD32, 4 KiB random read QD1, 4 KiB random write QD32. Each
# figure is the median of REPEAT runs of SECONDS_PER_RUN; rounds alternate the targets so
# drift on this shared machine hits all alike. Also printed: each target's CPU use while idle.
#
#   SPDK_DIR=/path/to/spdk scripts/benchmark-spdk.sh
#
# SPDK is not part of Fathom and is not built here: SPDK_DIR must hold a built tree
# (build/bin/nvmf_tgt, build/bin/spdk_nvme_perf, scripts/rpc.py); docs/benchmarks.md says how
# the one measured was built. Needs root for hugepages (1 GiB for the target and initiator).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SPDK=${SPDK_DIR:?set SPDK_DIR to a built SPDK tree}
REPEAT=${REPEAT:-3} SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
TARGETS=${TARGETS:-"spdk fathom"}
export LD_LIBRARY_PATH=$SPDK/build/lib:$SPDK/dpdk/build/lib:${LD_LIBRARY_PATH:-}
export PYTHONPATH=$SPDK/python:${PYTHONPATH:-}
for f in build/bin/nvmf_tgt build/bin/spdk_nvme_perf scripts/rpc.py; do
    [[ -e $SPDK/$f ]] || { echo "missing $SPDK/$f: build SPDK first" >&2; exit 1; }
done
if (( $(awk '/HugePages_Free/ {print $2}' /proc/meminfo) < 1024 )); then
    echo 1536 > /proc/sys/vm/nr_hugepages
fi
mountpoint -q /dev/hugepages || { mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages; }
swift build -c release --product fathomd
swift build -c release --product fathom-perf
BIN=.build/release
WORK=$(mktemp -d /tmp/fathom-spdk-XXXXXX)
PID=
SHM=/dev/shm/fathom-spdk-$$.img
cleanup() { [[ -n $PID ]] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK" "$SHM"; }
trap cleanup EXIT
NQN=nqn.2026-11.io.fathom:bench PORT=4420
cat > "$WORK/fathom.json" <<JSON
{"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "$PORT", "trtype": "tcp"}, "portid": 1, "subsystems": ["$NQN"]}],
 "subsystems": [{"nqn": "$NQN", "attr": {"allow_any_host": "1"}, "namespaces": [
   {"nsid": 1, "device": {"backend": "memory", "size": "1G"}}]}]}
JSON
sed "s|\"backend\": \"memory\", \"size\": \"1G\"|\"path\": \"$SHM\"|" "$WORK/fathom.json" > "$WORK/fathom-shm.json"
[[ " $TARGETS " == *-shm* ]] && dd if=/dev/urandom of="$SHM" bs=1M count=1024 status=none
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

start_target() {
    case $1 in
    spdk|spdk-intr|spdk-shm)
        local intr=(); [[ $1 == spdk-intr ]] && intr=(--interrupt-mode)
        taskset -c 0 "$SPDK/build/bin/nvmf_tgt" -m 0x1 -r "$WORK/spdk.sock" "${intr[@]}" > "$WORK/$1.log" 2>&1 &
        PID=$!
        local rpc=(python3 "$SPDK/scripts/rpc.py" -s "$WORK/spdk.sock")
        for _ in $(seq 1 100); do [[ -S $WORK/spdk.sock ]] && break; sleep 0.1; done
        "${rpc[@]}" nvmf_create_transport -t TCP -q 128 > /dev/null
        local bdev=Malloc0
        if [[ $1 == spdk-shm ]]; then
            bdev=AIO0; "${rpc[@]}" bdev_aio_create "$SHM" AIO0 512 > /dev/null
        else
            "${rpc[@]}" bdev_malloc_create -b Malloc0 1024 512 > /dev/null
        fi
        "${rpc[@]}" nvmf_create_subsystem "$NQN" -a -s SPDK0001 > /dev/null
        "${rpc[@]}" nvmf_subsystem_add_ns "$NQN" $bdev > /dev/null
        "${rpc[@]}" nvmf_subsystem_add_listener "$NQN" -t tcp -a 127.0.0.1 -s $PORT > /dev/null
        ;;
    fathom|fathom-shm)
        taskset -c 0 $BIN/fathomd --config "$WORK/$1.json" --reactors 1 --log-level warning \
            --state-dir "$WORK/state" --control-socket "$WORK/fathom.sock" ${FATHOM_ARGS:-} > "$WORK/fathom.log" 2>&1 &
        PID=$!
        ;;
    esac
    wait_port
}

stop_target() { kill "$PID"; wait "$PID" 2>/dev/null || true; PID=; rm -f "$WORK/spdk.sock"; }

# Percent of one CPU the target used over 3 s with nothing connected.
idle_cpu() {
    local hz a b; hz=$(getconf CLK_TCK)
    a=$(awk '{print $14 + $15}' "/proc/$PID/stat"); sleep 3; b=$(awk '{print $14 + $15}' "/proc/$PID/stat")
    echo "idle $1 $(( (b - a) * 100 / (3 * hz) ))"
}

# measure TARGET INITIATOR QD SIZE PATTERN: one line "run TARGET INITIATOR WORKLOAD iops mib p50"
measure() {
    local target=$1 init=$2 qd=$3 size=$4 pattern=$5 out
    local workload="$pattern-$size-qd$qd"
    if [[ $init == spdk_nvme_perf ]]; then
        out=$(taskset -c 1 "$SPDK/build/bin/spdk_nvme_perf" -c 0x2 -q "$qd" -o "$size" -w "$pattern" -t "$SECONDS_PER_RUN" -L \
              -r "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:$PORT subnqn:$NQN" 2>&1 || true)
        OUT=$out python3 - "$target" "$init" "$workload" <<'PY'
import os, re, sys
text = os.environ["OUT"]
total = re.search(r"^Total\s*:\s*([\d.]+)\s+([\d.]+)", text, re.M)
p50 = re.search(r"^\s*50\.00000%\s*:\s*([\d.]+)us", text, re.M)
if total and p50:
    print("run", *sys.argv[1:4], total.group(1), total.group(2), p50.group(1))
else:
    print("run", *sys.argv[1:4], "nan nan nan")
PY
    else
        out=$(taskset -c 1 $BIN/fathom-perf run --port $PORT --nqn "$NQN" --nsid 1 -q "$qd" -o "$size" -w "$pattern" \
              -t "$SECONDS_PER_RUN" --warmup 1 --json 2>/dev/null || echo '{}')
        python3 -c '
import json, sys
r = json.loads(sys.argv[4] or "{}")
print("run", *sys.argv[1:4], r.get("iops", "nan"), r.get("mib_s", "nan"), r.get("lat_p50_us", "nan"))' "$target" "$init" "$workload" "$out"
    fi
}

WORKLOADS=("32 4096 randread" "32 131072 read" "1 4096 randread" "32 4096 randwrite")
# FATHOM_ARGS: extra fathomd options (e.g. FATHOM_ARGS="--busy-poll-us 50").
# ONLY="QD SIZE PATTERN" measures just that workload (e.g. more rounds of the noisy QD1 latency).
if [[ -n ${ONLY:-} ]]; then WORKLOADS=("$ONLY"); fi
{
for round in $(seq 1 "$REPEAT"); do
    # Rotate the order of the targets each round.
    read -ra order <<<"$TARGETS"
    shift_by=$(( (round - 1) % ${#order[@]} ))
    order=("${order[@]:$shift_by}" "${order[@]:0:$shift_by}")
    for t in "${order[@]}"; do
        start_target "$t"
        [[ $round == 1 ]] && idle_cpu "$t"
        for w in "${WORKLOADS[@]}"; do
            for init in spdk_nvme_perf fathom-perf; do
                # shellcheck disable=SC2086
                measure "$t" "$init" $w
            done
        done
        stop_target
    done
done
} | tee "$WORK/results.txt" >&2
python3 - "$TARGETS" "$WORK/results.txt" <<'PY'
import collections, statistics, sys
targets = sys.argv[1].split()
lines = open(sys.argv[2]).read().splitlines()
runs = collections.defaultdict(list)
idle = {}
for line in lines:
    f = line.split()
    if f[0] == "idle":
        idle[f[1]] = int(f[2])
    elif f[0] == "run" and f[4] != "nan":
        runs[(f[2], f[3], f[1])].append((float(f[4]), float(f[5]), float(f[6])))
def med(k, i):
    v = runs.get(k)
    return statistics.median(x[i] for x in v) if v else float("nan")
workloads = []
for (init, w, t) in runs:
    if (init, w) not in workloads:
        workloads.append((init, w))
# One ratio column per Fathom target, against SPDK's RAM bdev ("spdk") when it ran.
ours = [t for t in targets if t.startswith("fathom")] if "spdk" in targets else []
print("\n| initiator | workload | " + " | ".join(f"{t} IOPS | {t} p50 µs" for t in targets)
      + "".join(f" | {t}/spdk IOPS" for t in ours) + " |")
print("|---|---|" + "---:|---:|" * len(targets) + "---:|" * len(ours))
for init, w in workloads:
    cells = []
    for t in targets:
        cells += [f"{med((init, w, t), 0):,.0f}", f"{med((init, w, t), 2):.1f}"]
    cells += [f"{med((init, w, t), 0) / med((init, w, 'spdk'), 0):.2f}" for t in ours]
    print(f"| {init} | {w} | " + " | ".join(cells) + " |")
print("\nidle CPU (% of one core, nothing connected): " + ", ".join(f"{t} {idle.get(t, '?')}%" for t in targets))
PY
