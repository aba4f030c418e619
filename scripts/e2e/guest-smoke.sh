#!/bin/sh
# Guest-side self-check of the harness itself (no NVMe target needed):
# tools run, modules are loaded, the host is reachable at 10.0.2.2, and
# "nvme discover" against a closed port fails cleanly instead of hanging.
# kernel-e2e.sh --selftest prepends HTTP_PORT, HTTP_TOKEN and CLOSED_PORT.
set -u
HOST_ADDR=${HOST_ADDR:-10.0.2.2}
RESULT_DEV=${RESULT_DEV:-/dev/null}
FAILS=0
say()  { echo "$*"; echo "$*" > "$RESULT_DEV" 2>/dev/null || true; }
pass() { say "PASS: $*"; }
fail() { say "FAIL: $*"; FAILS=$((FAILS + 1)); }

echo "+ cat /proc/modules"; cut -d' ' -f1-3 /proc/modules
for m in nvme_tcp nvme_fabrics nvme_core virtio_net crc32c_generic; do
    grep -q "^$m " /proc/modules && pass "module $m loaded" || fail "module $m not loaded"
done
[ -c /dev/nvme-fabrics ] && pass "/dev/nvme-fabrics exists" || fail "/dev/nvme-fabrics missing"
v=$(nvme version 2>&1) && pass "nvme version: $(echo "$v" | head -n1)" || fail "nvme version: $v"
v=$(fio --version 2>&1) && pass "fio --version: $v" || fail "fio --version: $v"
engines=$(fio --enghelp 2>&1 | tr -d '\t' | tr '\n' ' ')
echo "fio engines: $engines"
case " $engines " in *" libaio "*) pass "fio has libaio" ;; *) fail "fio lacks libaio" ;; esac

got=$(timeout 20 wget -q -O - "http://$HOST_ADDR:$HTTP_PORT/token.txt" 2>&1)
[ "$got" = "$HTTP_TOKEN" ] && pass "host http server reachable at $HOST_ADDR:$HTTP_PORT" \
                           || fail "wget $HOST_ADDR:$HTTP_PORT got '$got'"

t0=$(cut -d' ' -f1 /proc/uptime)
out=$(timeout 60 nvme discover -t tcp -a "$HOST_ADDR" -s "$CLOSED_PORT" 2>&1); r=$?
dt=$(echo "$(cut -d' ' -f1 /proc/uptime) $t0" | awk '{printf "%.1f", $1-$2}')
echo "$out"
if [ $r -ne 0 ] && [ $r -ne 124 ] && [ $r -ne 143 ]; then pass "discover to closed port fails cleanly (rc=$r, ${dt}s)"
else fail "discover to closed port: rc=$r after ${dt}s"; fi
[ -z "$(ls /sys/class/nvme/ 2>/dev/null)" ] && pass "no controller left behind" \
                                          || fail "left: $(ls /sys/class/nvme/)"
say "SMOKE: $FAILS failure(s)"
[ $FAILS -eq 0 ]
