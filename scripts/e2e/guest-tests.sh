#!/bin/sh
# Guest-side NVMe/TCP tests for Fathom (runs as /test.sh under busybox sh in
# the QEMU guest, see run-guest.sh). kernel-e2e.sh prepends the real values
# as plain assignments; the defaults below are for running it by hand.
#
# Not "set -e": every check must print PASS/FAIL and cleanup (disconnect) must
# still run after a failure; exits 1 if any check failed.
set -u
set -o pipefail 2>/dev/null || true
TARGET_ADDR=${TARGET_ADDR:-10.0.2.2}      # QEMU user netdev: the host's 127.0.0.1
TARGET_PORT=${TARGET_PORT:-4420}
SUBNQN=${SUBNQN:-nqn.2026-11.io.fathom:e2e}
# fio sizes: TCG gives ~3k IOPS, keep the whole run well under 10 minutes.
FIO_RAND_SIZE=${FIO_RAND_SIZE:-32M}       # 4k random write + crc32c verify
FIO_SEQ_SIZE=${FIO_SEQ_SIZE:-32M}         # 128k sequential write + verify
FIO_IODEPTH=${FIO_IODEPTH:-16}
RESULT_DEV=${RESULT_DEV:-/dev/null}       # set by /init: second serial port
# EXTRA_TESTS: test functions run after the core sessions (from guest-dataset.sh,
# guest-io-cmds.sh, guest-hotplug.sh); SKIP_CORE=1 skips the plain/digest sessions.

FAILS=0
CTRL='' NSDEV=''
cd /tmp || exit 1
say()  { echo "$*"; echo "$*" > "$RESULT_DEV" 2>/dev/null || true; }
pass() { say "PASS: $*"; }
fail() { say "FAIL: $*"; FAILS=$((FAILS + 1)); }
now()  { cut -d' ' -f1 /proc/uptime; }
# is_num VALUE: decimal or 0x-hex as nvme-cli prints fields (%#x: "0", "0x2").
# Checked before any $((...)): a malformed number there aborts busybox sh.
is_num() { case $1 in [0-9]*) case $1 in *[!0-9a-fA-Fx]*) return 1 ;; esac; return 0 ;; esac; return 1; }
has_bit() { is_num "$1" && [ $(($1 & $2)) -ne 0 ]; }   # has_bit VALUE MASK
# Run a command with a time bound, echoing it and its output to the console.
run()  { t=$1; shift; echo "+ $*"; timeout "$t" "$@" > /tmp/out 2>&1; r=$?; cat /tmp/out; return $r; }

# fio engine: Debian's fio links libaio (shipped in the image); fall back to
# psync (always built in) if libaio is not usable.
if fio --enghelp=libaio > /dev/null 2>&1; then FIO_ENGINE=libaio; else FIO_ENGINE=psync; fi

# Controllers (nvmeX) of subsystem $1 (default $SUBNQN) over tcp, from sysfs.
our_ctrls() {
    local q=${1:-$SUBNQN} c
    for c in /sys/class/nvme/nvme*; do
        [ -e "$c/subsysnqn" ] || continue
        [ "$(cat "$c/subsysnqn")" = "$q" ] && [ "$(cat "$c/transport")" = tcp ] \
            && basename "$c"
    done
}
# Block device of namespace $1 (default 1) of subsystem $2 (default $SUBNQN).
# With native multipath (=y on Debian) the disk is nvme<subsys>n<instance>: the
# number is neither the controller's nor the nsid, so match sysfs "nsid".
# Hidden per-path nodes (nvmeXcYnZ) have no /dev entry and are skipped.
our_nsdev() {
    local want=${1:-1} q=${2:-$SUBNQN} b n
    for b in /sys/block/nvme*n*; do
        n=${b##*/}
        case $n in *c*n*) continue ;; esac
        [ -e "$b/device/subsysnqn" ] && [ -e "$b/nsid" ] || continue
        [ "$(cat "$b/device/subsysnqn")" = "$q" ] && [ "$(cat "$b/nsid")" = "$want" ] \
            && [ -b "/dev/$n" ] && { echo "/dev/$n"; return; }
    done
}
# our_nsdev, polled for up to $3 seconds (a namespace shows up after connect).
wait_nsdev() {
    local i=0 d
    while [ $i -lt $(($3 * 2)) ]; do
        d=$(our_nsdev "$1" "$2") && [ -n "$d" ] && { echo "$d"; return 0; }
        sleep 0.5; i=$((i + 1))
    done
    return 1
}

check_discover() {
    i=0
    while :; do   # a few tries: the guest link may still be settling
        run 30 nvme discover -t tcp -a "$TARGET_ADDR" -s "$TARGET_PORT" && break
        i=$((i + 1)); [ $i -ge 3 ] && break; sleep 2
    done
    if grep -q "subnqn: *$SUBNQN\$" /tmp/out; then pass "discover lists $SUBNQN"
    else fail "discover does not list $SUBNQN"; fi
}

connect() {  # $1 = label, rest = extra connect options
    label=$1; shift
    CTRL='' NSDEV=''
    if ! run 60 nvme connect -t tcp -a "$TARGET_ADDR" -s "$TARGET_PORT" -n "$SUBNQN" \
            --ctrl-loss-tmo=30 "$@"; then
        fail "[$label] nvme connect${*:+ $*} failed"; return 1
    fi
    NSDEV=$(wait_nsdev 1 "$SUBNQN" 20)   # up to 20 s for the namespace to appear
    CTRL=$(our_ctrls | head -n1)
    if [ -n "$CTRL" ] && [ -n "$NSDEV" ]; then pass "[$label] connect -> /dev/$CTRL, $NSDEV"
    else fail "[$label] connect: ctrl='$CTRL' ns='$NSDEV' after 20 s"; return 1; fi
}

identify() {
    label=$1
    if run 30 nvme id-ctrl "/dev/$CTRL" && grep -q "^subnqn *: *$SUBNQN\$" /tmp/out; then
        pass "[$label] id-ctrl /dev/$CTRL (subnqn $SUBNQN)"
    else fail "[$label] id-ctrl /dev/$CTRL missing or wrong subnqn"; fi
    if run 30 nvme id-ns "$NSDEV" && grep -q '^nsze' /tmp/out; then
        pass "[$label] id-ns $NSDEV ($(grep '^nsze' /tmp/out | tr -s ' '))"
    else fail "[$label] id-ns $NSDEV"; fi
}

fio_job() {  # $1 = label, $2 = name, $3 = rw, $4 = bs, $5 = size
    t0=$(now)
    run 300 fio --name="$2" --filename="$NSDEV" --direct=1 --ioengine="$FIO_ENGINE" \
        --iodepth="$FIO_IODEPTH" --rw="$3" --bs="$4" --size="$5" \
        --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
        --group_reporting
    r=$?
    if [ $r -eq 0 ] && grep -q 'err= *0' /tmp/out && ! grep -qi 'verify.*fail\|bad magic\|crc32c.*mismatch' /tmp/out; then
        pass "[$1] fio $2 ($3 bs=$4 size=$5 $FIO_ENGINE qd=$FIO_IODEPTH) in $(echo "$(now) $t0" | awk '{printf "%.1f", $1-$2}')s"
    else fail "[$1] fio $2 rc=$r"; fi
}

disconnect() {
    label=$1
    if run 60 nvme disconnect -n "$SUBNQN" && grep -q 'disconnected [1-9]' /tmp/out; then :
    else fail "[$label] nvme disconnect -n $SUBNQN"; return 1; fi
    i=0
    while [ -n "$(our_ctrls)" ] && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
    if [ -z "$(our_ctrls)" ]; then pass "[$label] disconnect"
    else fail "[$label] controller still present after disconnect"; fi
}

# Digests: a connect with -g/-G only succeeds if the target's ICResp echoes
# the digest flags (the 6.1 host fails the queue on mismatch), and every PDU
# digest is then checked by the host, so clean I/O with no "digest error" in
# dmesg shows they were on. Newer kernels may also expose them in sysfs.
check_digests() {
    label=$1
    found=$(ls /sys/class/nvme/"$CTRL"/ 2>/dev/null | grep -i digest || true)
    for f in $found; do say "INFO: [$label] /sys/class/nvme/$CTRL/$f = $(cat "/sys/class/nvme/$CTRL/$f")"; done
    [ -n "$found" ] || say "INFO: [$label] kernel $(uname -r) exposes no digest state in sysfs"
    if dmesg | grep -i 'nvme.*digest'; then
        fail "[$label] digest messages in dmesg"
    else pass "[$label] digests negotiated (connect -g -G accepted, no digest errors)"; fi
}

session() {  # $1 = label, rest = extra connect options
    label=$1; shift
    if connect "$label" "$@"; then
        identify "$label"
        fio_job "$label" randwrite-4k randwrite 4k "$FIO_RAND_SIZE"
        fio_job "$label" seqwrite-128k write 128k "$FIO_SEQ_SIZE"
        [ "$label" = digest ] && check_digests "$label"
    fi
    # Always try to tear down, even after a failed connect (it may be half up).
    if [ -n "$(our_ctrls)" ] || [ -n "$CTRL" ]; then disconnect "$label"; fi
}

say "INFO: target $TARGET_ADDR:$TARGET_PORT subnqn $SUBNQN, fio engine $FIO_ENGINE, hostnqn $(cat /etc/nvme/hostnqn)"
T0=$(now)
check_discover
if [ "${SKIP_CORE:-0}" != 1 ]; then
    session plain
    session digest -g -G
fi
# Further checks, defined by files kernel-e2e.sh concatenates before this one
# (guest-dataset.sh, guest-io-cmds.sh, guest-hotplug.sh); each connects and
# disconnects on its own, so the controller check below covers them too.
for t in ${EXTRA_TESTS:-}; do
    say "INFO: ----- $t -----"
    if type "$t" > /dev/null 2>&1; then "$t"; else fail "no guest test function '$t'"; fi
done

run 30 nvme list
# Both views: nvme-cli's device list and the kernel's controller list.
if ! grep -q '^/dev/nvme' /tmp/out && [ -z "$(ls /sys/class/nvme/ 2>/dev/null)" ]; then
    pass "nvme list: no fabric controller left"
else fail "controllers left: $(ls /sys/class/nvme/ 2>/dev/null | tr '\n' ' ')"; fi

if [ $FAILS -ne 0 ]; then
    echo "----- dmesg (nvme/net) -----"; dmesg | grep -iE 'nvme|tcp|eth0|virtio' | tail -n 40
fi
say "SUMMARY: $FAILS failure(s) in $(echo "$(now) $T0" | awk '{printf "%.0f", $1-$2}')s"
[ $FAILS -eq 0 ]
