#!/usr/bin/env bash
# Side-by-side benchmark on this machine, in one run:
#   bare  - fathom-perf's bare io_uring responder: NVMe/TCP framing of the same sizes, no
#           NVMe work at all (the transport's limit here)
#   null, memory, file - fathomd with one reactor and a null, memory or file namespace
#   shm   - the same file copied to /dev/shm (tmpfs: fathomd reads and writes it inline)
#   clone - a clone namespace whose base is the same file (fathom-perf's host reads the base
#           until it writes; its writes copy chunks up into its overlay): ratio to `file`
#   fio   - fio (ioengine=io_uring, buffered like the file namespace, page cache kept) on the
#           same file, same block size and queue depth, on the target's CPU: the file
#           namespace's baseline
#   direct, fio-dio - the same file with O_DIRECT on both sides (the storage itself), also at
#           QD128 for 4 KiB, where both saturate the device
# Target pinned to CPU 0, load generator (fathom-perf) to CPU 1. Each figure is the median of
# REPEAT runs of SECONDS each; Fathom's ratio to the bare responder is printed next to it.
# Workloads: 4 KiB random read QD32, 128 KiB sequential read QD32, 4 KiB random read QD1,
# 4 KiB random write QD32.
#
# --direct measures only the O_DIRECT rows (4 KiB random reads at QD32, QD128 and QD1, writes
# at QD32, 128 KiB sequential reads),
# each twice: as above, and with every vCPU kept busy by a SCHED_IDLE spinner (it takes only
# time nothing else wants). On a VM the virtual disk's speed depends on what the guest's vCPUs
# leave idle, and fio alone leaves one vCPU idle where a target and its load generator cannot;
# the second pair compares the two under the same condition (docs/benchmarks.md). Fathom and
# fio alternate, one run each per round, so a slow minute of the machine hits both.
#
# BENCH_DIR=/mnt/nvme puts the benchmark's file on that filesystem instead of /tmp: on a
# machine with real storage, `BENCH_DIR=/mnt/nvme scripts/benchmark.sh --direct` is the
# comparison with fio that counts.
# --zram (root, implies --direct) makes a 2 GiB zram block device, puts ext4 on it and the
# file there: a block device with no virtual disk's interrupts or VM exits behind it (zram
# completes each request on the submitting CPU), so the O_DIRECT rows show what the target
# adds to the storage path when the storage is fast. Torn down at exit.
# Usage: scripts/benchmark.sh [--quick] [--direct] [--zram]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPEAT=${REPEAT:-5} SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
DIRECT_ONLY=0 ZRAM=0
for arg in "$@"; do
    case $arg in
        --quick) REPEAT=1 SECONDS_PER_RUN=2 ;;
        --direct) DIRECT_ONLY=1 ;;
        --zram) DIRECT_ONLY=1 ZRAM=1 ;;
        *) echo "usage: $0 [--quick] [--direct] [--zram]" >&2; exit 2 ;;
    esac
done
if [[ $ZRAM == 1 && ( $(id -u) != 0 || ! -e /sys/class/zram-control/hot_add ) ]]; then
    echo "--zram needs root and the zram driver (modprobe zram)" >&2; exit 2
fi
bash scripts/install-deps.sh --bench
swift build -c release --product fathomd
swift build -c release --product fathom-perf
BIN=.build/release
WORK=$(mktemp -d /tmp/fathom-bench-XXXXXX)
PIDS=()
SPINNERS=()
SHM=/dev/shm/fathom-bench-$$.img
ZRAM_DEV=""
cleanup() {
    for p in "${PIDS[@]}" "${SPINNERS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [[ -n $ZRAM_DEV ]]; then
        umount "$WORK/zram" 2>/dev/null || true
        echo "${ZRAM_DEV#zram}" > /sys/class/zram-control/hot_remove 2>/dev/null || true
    fi
    rm -rf "$WORK" "$SHM" "${DATA:-}"
}
trap cleanup EXIT
if [[ $ZRAM == 1 ]]; then
    ZRAM_DEV=zram$(cat /sys/class/zram-control/hot_add)
    echo 2G > "/sys/block/$ZRAM_DEV/disksize"
    mkfs.ext4 -q -F "/dev/$ZRAM_DEV"
    mkdir "$WORK/zram" && mount "/dev/$ZRAM_DEV" "$WORK/zram"
    BENCH_DIR=$WORK/zram
    echo "[benchmark] the file is on ext4 on /dev/$ZRAM_DEV" >&2
fi
# DATA: the 1 GiB file every file namespace and fio use.
DATA=$(mktemp "${BENCH_DIR:-$WORK}/fathom-bench-XXXXXX.img")
PORT=24420 BARE_PORT=24430 NQN=nqn.2026-11.io.fathom:bench
truncate -s 1G "$DATA"
# Fill the file so reads hit real (page-cached) data, not holes.
dd if=/dev/urandom of="$DATA" bs=1M count=1024 conv=notrunc status=none
# The shm namespace (nsid 5) is not measured by --direct: a 1 MiB placeholder keeps the
# configuration the same without taking 1 GiB of tmpfs.
if [[ $DIRECT_ONLY == 1 ]]; then truncate -s 1M "$SHM"; else cp "$DATA" "$SHM"; fi
cat > "$WORK/config.json" <<JSON
{"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "$PORT", "trtype": "tcp"}, "portid": 1, "subsystems": ["$NQN"]}],
 "subsystems": [{"nqn": "$NQN", "attr": {"allow_any_host": "1"}, "namespaces": [
   {"nsid": 1, "device": {"backend": "null", "size": "16G"}},
   {"nsid": 2, "device": {"backend": "memory", "size": "1G"}},
   {"nsid": 3, "device": {"path": "$DATA"}},
   {"nsid": 4, "device": {"path": "$DATA", "direct_io": "1", "uuid": "7d0c6f0e-1c1a-4b4e-8a55-0c3f6a1e2d45", "nguid": "9e41d2b7a3c84f0b9d6e1a2b3c4d5e6f"}},
   {"nsid": 5, "device": {"path": "$SHM"}},
   {"nsid": 6, "device": {"backend": "clone", "path": "$DATA", "overlay_dir": "$WORK/overlays", "uuid": "2b8e5f1a-6c3d-4e7f-9a0b-1c2d3e4f5a6c", "nguid": "4f6a8c0e2b4d6f8091a3c5e7f9b1d3e6"}}]}]}
JSON
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

taskset -c 0 $BIN/fathom-perf bare-responder --port $BARE_PORT & PIDS+=($!)
taskset -c 0 $BIN/fathomd --config "$WORK/config.json" --reactors 1 --log-level warning --state-dir "$WORK/state" & PIDS+=($!)
wait_port $BARE_PORT && wait_port $PORT

# run TARGET WORKLOAD-ARGS...: prints "iops mib_s p50_us" (medians of REPEAT runs)
run() {
    local target=$1; shift
    local args=(--port $PORT --nqn $NQN)
    case $target in
        bare) args=(--bare --port $BARE_PORT) ;;
        null) args+=(--nsid 1) ;; memory) args+=(--nsid 2) ;; file) args+=(--nsid 3) ;; direct) args+=(--nsid 4) ;;
        shm) args+=(--nsid 5) ;; clone) args+=(--nsid 6) ;;
    esac
    for _ in $(seq 1 "$REPEAT"); do
        taskset -c 1 $BIN/fathom-perf run "${args[@]}" "$@" -t "$SECONDS_PER_RUN" --warmup 1 --json
    done | python3 -c '
import json, statistics, sys
rows = [json.loads(l) for l in sys.stdin if l.startswith("{")]
med = lambda k: statistics.median(r[k] for r in rows)
print("%.0f %.1f %.1f" % (med("iops"), med("mib_s"), med("lat_p50_us")))'
}

# fio RW BS QD DIRECT: the same file straight through io_uring, no network ("iops mib_s p50_us").
# invalidate=0: keep the page cache, as the buffered file namespace does. fixedbufs and
# registerfiles: the registered buffers and file table Fathom's own storage I/O uses, so fio
# gets the same io_uring features. scramble_buffers=0: fio writes the same random bytes each
# time, as fathom-perf does (fio's default changes part of each buffer per write, which on
# compressing storage such as zram changes what a write costs).
fio_run() {
    for _ in $(seq 1 "$REPEAT"); do
        taskset -c 0 fio --name=baseline --filename="$DATA" --ioengine=io_uring --direct="$4" --invalidate=0 --fixedbufs --registerfiles --scramble_buffers=0 --rw="$1" --bs="$2" \
            --iodepth="$3" --size=1G --runtime="$SECONDS_PER_RUN" --time_based --ramp_time=1 --output-format=json 2>/dev/null
    done | python3 -c '
import json, statistics, sys
text = sys.stdin.read()
rows, dec, i = [], json.JSONDecoder(), 0
while i < len(text):
    j = text.find("{", i)
    if j < 0: break
    obj, i = dec.raw_decode(text, j)
    rows.append(obj["jobs"][0])
side = lambda r: r["read"] if r["read"]["io_bytes"] > 0 else r["write"]
med = lambda f: statistics.median(f(side(r)) for r in rows)
print("%.0f %.1f %.1f" % (med(lambda s: s["iops"]), med(lambda s: s["bw_bytes"] / 1048576),
                          med(lambda s: s["clat_ns"]["percentile"]["50.000000"] / 1000)))'
}

# The file's pages leave the page cache before O_DIRECT runs (reads of cached ranges would
# first have to invalidate them, which io_uring hands to its worker threads), and are read
# back in before buffered runs, so neither side finds the cache as the other left it.
evict_cache() { python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$DATA"; }
warm_cache() { cat "$DATA" > /dev/null; }

# direct_rows NAME WORKLOAD-ARGS...: the O_DIRECT namespace and fio --direct=1 on the same file,
# alternating (one run of each per round, REPEAT rounds), medians printed. At QD1 Fathom's
# figure holds a network round trip that fio's does not, so its p50 is also set against fio's
# p50 plus the bare responder's (the transport's round trip, measured in the same run).
direct_rows() {
    local name=$1; shift
    local -a a=("$@") fathom_rows=() fio_rows=()
    for _ in $(seq 1 "$REPEAT"); do
        evict_cache; fathom_rows+=("$(REPEAT=1 run direct "${a[@]}")")
        evict_cache; fio_rows+=("$(REPEAT=1 fio_run "${a[1]}" "${a[3]}" "${a[5]}" 1)")
    done
    read -r direct_iops mibs p50 < <(printf '%s\n' "${fathom_rows[@]}" | medians)
    printf '%-32s %-8s %12s %10s %10s\n' "$name" "direct" "$direct_iops" "$mibs" "$p50"
    read -r iops mibs fio_p50 < <(printf '%s\n' "${fio_rows[@]}" | medians)
    local ratio="direct/fio $(python3 -c "print(f'{$direct_iops/$iops:.2f}')")"
    if [[ ${a[5]} == 1 ]]; then
        read -r _ _ bare_p50 < <(run bare "${a[@]}")
        ratio+=", p50 $(python3 -c "print(f'{$p50/($fio_p50+$bare_p50):.2f}')")× of fio + bare ($bare_p50 µs)"
    fi
    printf '%-32s %-8s %12s %10s %10s %s\n' "$name" "fio-dio" "$iops" "$mibs" "$fio_p50" "$ratio"
    warm_cache
}
# medians: "iops mib_s p50_us" lines in, their column medians out.
medians() {
    python3 -c '
import statistics, sys
rows = [[float(x) for x in l.split()] for l in sys.stdin if l.strip()]
print("%.0f %.1f %.1f" % tuple(statistics.median(r[i] for r in rows) for i in range(3)))'
}

# busy_cpus on|off: a SCHED_IDLE busy loop on each CPU, which runs only when nothing else does.
busy_cpus() {
    if [[ $1 == on ]]; then
        for c in 0 1; do taskset -c $c chrt -i 0 sh -c 'while :; do :; done' & SPINNERS+=($!); done
    else
        for p in "${SPINNERS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
        SPINNERS=()
    fi
}

printf '%-32s %-8s %12s %10s %10s %8s\n' workload target IOPS MiB/s p50_us vs_bare
if [[ $DIRECT_ONLY == 1 ]]; then
    for w in "randread 4KiB QD32|-w randread -o 4096 -q 32" "randread 4KiB QD128|-w randread -o 4096 -q 128" \
             "randwrite 4KiB QD32|-w randwrite -o 4096 -q 32" "read 128KiB QD32|-w read -o 131072 -q 32" \
             "randread 4KiB QD1|-w randread -o 4096 -q 1"; do
        name=${w%%|*}; read -r -a wargs <<< "${w#*|}"
        direct_rows "$name" "${wargs[@]}"
        # zram has no virtual disk whose speed depends on idle vCPUs.
        [[ $ZRAM == 1 ]] && continue
        busy_cpus on
        direct_rows "$name busy vCPUs" "${wargs[@]}"
        busy_cpus off
    done
    exit 0
fi
for w in "randread 4KiB QD32|-w randread -o 4096 -q 32" "read 128KiB QD32|-w read -o 131072 -q 32" \
         "randread 4KiB QD1|-w randread -o 4096 -q 1" "randwrite 4KiB QD32|-w randwrite -o 4096 -q 32"; do
    name=${w%%|*}; read -r -a wargs <<< "${w#*|}"
    base=""
    for t in bare null memory shm file clone; do
        [[ $t == bare && $name == randwrite* ]] && { printf '%-32s %-8s %12s\n' "$name" bare "(reads only)"; continue; }
        read -r iops mibs p50 < <(run $t "${wargs[@]}")
        if [[ $t == bare ]]; then base=$iops; ratio="1.00"; else ratio=$([[ -n $base ]] && python3 -c "print(f'{$iops/$base:.2f}')" || echo "-"); fi
        [[ $t == clone ]] && ratio="clone/file $(python3 -c "print(f'{$iops/$file_iops:.2f}')")"
        printf '%-32s %-8s %12s %10s %10s %8s\n' "$name" "$t" "$iops" "$mibs" "$p50" "$ratio"
        [[ $t == file ]] && file_iops=$iops
    done
    # The file namespace against fio on the same file (the column is then Fathom / fio).
    fio_rw=${wargs[1]}; fio_bs=${wargs[3]}; fio_qd=${wargs[5]}
    read -r iops mibs p50 < <(fio_run "$fio_rw" "$fio_bs" "$fio_qd" 0)
    printf '%-32s %-8s %12s %10s %10s %8s\n' "$name" "fio" "$iops" "$mibs" "$p50" "file/fio $(python3 -c "print(f'{$file_iops/$iops:.2f}')")"
    direct_rows "$name" "${wargs[@]}"
    # At QD32 part of every command's cycle is on the network, so the device sees fewer
    # outstanding reads than fio gives it; at QD128 both saturate it (the storage's peak).
    if [[ $name == *4KiB\ QD32 ]]; then
        direct_rows "${name/QD32/QD128}" "${wargs[@]:0:4}" -q 128
    fi
done
