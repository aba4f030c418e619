#!/usr/bin/env bash
# Measures, while some load runs, how long the block device takes per request: the time from
# block_rq_issue (handed to the driver) to block_rq_complete, from the kernel's own tracepoints.
# Used to tell a target's latency from its disk's (docs/benchmarks.md, "File namespaces against
# fio"): run it during `fathom-perf run` against an O_DIRECT namespace, then during fio.
#
#   scripts/trace-block-latency.sh [SECONDS]     # needs root and tracefs; default 1 s
set -euo pipefail
SECONDS_TO_TRACE=${1:-1}
T=/sys/kernel/tracing
[ -e $T/trace ] || mount -t tracefs nodev $T
OUT=$(mktemp)
trap 'echo 0 > $T/events/block/block_rq_issue/enable; echo 0 > $T/events/block/block_rq_complete/enable; rm -f "$OUT"' EXIT
echo 0 > $T/tracing_on; echo > $T/trace; echo 8192 > $T/buffer_size_kb
echo 1 > $T/events/block/block_rq_issue/enable; echo 1 > $T/events/block/block_rq_complete/enable
echo 1 > $T/tracing_on; sleep "$SECONDS_TO_TRACE"; echo 0 > $T/tracing_on
cat $T/trace > "$OUT"
python3 - "$OUT" <<'PY'
import re, sys
issued, latencies, outstanding = {}, [], []
pattern = re.compile(r'\s([\d.]+): block_rq_(issue|complete): (\d+,\d+) .*?\(\) (\d+) \+ \d+')
for line in open(sys.argv[1]):
    m = pattern.search(line)
    if not m: continue
    t, kind, key = float(m.group(1)), m.group(2), (m.group(3), m.group(4))
    if kind == 'issue':
        outstanding.append(len(issued)); issued[key] = t
    elif key in issued:
        latencies.append((t - issued.pop(key)) * 1e6)
if not latencies:
    sys.exit("no block requests completed while tracing: is the load running?")
q = lambda a, p: sorted(a)[min(len(a) - 1, int(p * len(a)))]
print("requests %d  device latency us: p10 %.0f  p50 %.0f  p90 %.0f  p99 %.0f  |  at the device when issued: p50 %d"
      % (len(latencies), q(latencies, .1), q(latencies, .5), q(latencies, .9), q(latencies, .99), q(outstanding, .5)))
PY
