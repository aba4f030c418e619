# guest-crash.sh — defines test_crash for guest-tests.sh (concatenated before it).
#
# kill -9 of fathomd in the middle of a stream of acknowledged writes: each block is written
# with O_DIRECT and then fsync (so the host sends a Flush before dd returns). A third of the
# way in the guest asks the host (HOTPLUG_REQUEST crash) to kill -9 fathomd; a supervisor on
# the host starts it again with the same configuration. The kernel host reconnects by itself
# (reconnect-delay 1 s, ctrl-loss-tmo 30 s) and the writes carry on. Afterwards every block
# whose dd succeeded must read back exactly as written. Meanwhile a fio random-write job with
# crc32c verification runs on another range straight through the kill: the kernel holds and
# resends its I/O across the reconnect, and fio must finish and verify everything it wrote.
CRASH_FIO_SIZE=${CRASH_FIO_SIZE:-24M}
CRASH_BLOCKS=${CRASH_BLOCKS:-150}

crash_block() {  # $1 index: a 4096-byte block naming itself
    { printf 'fathom-crash-block-%08d-' "$1"; head -c 4096 /dev/zero; } | head -c 4096 > /tmp/blk
}

test_crash() {
    local L=crash i=0 acked=0 failed=0 bad=0 base=4096 cntlid0 cntlid1 ack expect got reconnected fio_pid fio_rc=0 fio_live=0
    connect crash --reconnect-delay=1 || { [ -n "$CTRL" ] && disconnect crash; return; }
    cntlid0=$(cat "/sys/class/nvme/$CTRL/cntlid" 2>/dev/null)
    : > /tmp/acked
    # 64 MiB in: far from the dd blocks (16 MiB in).
    fio --name=crash-fio --filename="$NSDEV" --direct=1 --ioengine=libaio --iodepth=8 --rw=randwrite --bs=4k \
        --offset=64M --size="$CRASH_FIO_SIZE" --verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 \
        --output=/tmp/crash-fio.out > /dev/null 2>&1 &
    fio_pid=$!
    while [ $i -lt "$CRASH_BLOCKS" ]; do
        if [ $i -eq $((CRASH_BLOCKS / 3)) ]; then
            kill -0 "$fio_pid" 2>/dev/null && fio_live=1
            hotplug_request crash
        fi
        crash_block $i
        if dd if=/tmp/blk of="$NSDEV" bs=4096 seek=$((base + i)) count=1 oflag=direct conv=fsync,notrunc 2>/dev/null; then
            echo $i >> /tmp/acked; acked=$((acked + 1))
        else
            failed=$((failed + 1))
        fi
        i=$((i + 1))
    done
    # The ack channel may be slow while the guest runs under TCG: try for up to 30 s.
    ack='' i=0
    while [ -z "$ack" ] && [ $i -lt 30 ]; do ack=$(hotplug_ack crash); [ -n "$ack" ] || sleep 1; i=$((i + 1)); done
    case $ack in
        ok*) pass "[$L] host: $ack" ;;
        *) fail "[$L] host did not kill and restart fathomd: ${ack:-no answer}" ;;
    esac
    cntlid1=$(cat "/sys/class/nvme/$CTRL/cntlid" 2>/dev/null)
    # A reconnect shows as a new controller ID or as the kernel's own message (a restarted
    # target may hand out the same ID again).
    reconnected=$(dmesg | grep -c "$CTRL: Successfully reconnected" || true)
    if [ "$(cat "/sys/class/nvme/$CTRL/state" 2>/dev/null)" = live ] && [ -n "$cntlid1" ] &&
       { [ "$cntlid1" != "$cntlid0" ] || [ "${reconnected:-0}" -gt 0 ]; }; then
        pass "[$L] the kernel host reconnected by itself (/dev/$CTRL live again, cntlid $cntlid0 -> $cntlid1, kernel: $reconnected reconnect(s))"
    else
        fail "[$L] no reconnect seen: state $(cat "/sys/class/nvme/$CTRL/state" 2>/dev/null), cntlid $cntlid0 -> $cntlid1"
    fi
    echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    for i in $(cat /tmp/acked); do
        expect=$(printf 'fathom-crash-block-%08d-' "$i")
        got=$(dd if="$NSDEV" bs=4096 skip=$((base + i)) count=1 iflag=direct 2>/dev/null | head -c ${#expect})
        [ "$got" = "$expect" ] || { bad=$((bad + 1)); [ $bad -le 3 ] && say "INFO: [$L] block $i reads '$got'"; }
    done
    if [ "$acked" -gt 0 ] && [ $bad -eq 0 ]; then
        pass "[$L] all $acked acknowledged writes intact after kill -9 and restart ($failed failed during the outage)"
    else
        fail "[$L] $bad of $acked acknowledged writes lost or wrong ($failed failed)"
    fi
    wait "$fio_pid" || fio_rc=$?
    if [ "$fio_rc" -eq 0 ] && ! grep -qi "verify.*fail\|bad magic\|crc32c.*mismatch" /tmp/crash-fio.out; then
        pass "[$L] fio randwrite $CRASH_FIO_SIZE with crc32c verify $([ $fio_live = 1 ] && echo "ran through the kill -9 and")" \
             "finished clean ($(grep -o 'IOPS=[^,]*' /tmp/crash-fio.out | head -n1))"
    else
        fail "[$L] fio across the kill -9: rc $fio_rc; $(grep -iE 'err|verify' /tmp/crash-fio.out | head -n3 | tr '\n' ' ')"
    fi
    disconnect crash
}
