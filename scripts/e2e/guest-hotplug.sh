# guest-hotplug.sh — defines test_hotplug for guest-tests.sh (concatenated
# before it by kernel-e2e.sh; uses its helpers: run, say, pass, fail, ...).
#
# Namespace hot add / resize / hot remove while connected, driven by config
# reload on the target. Protocol (host half: hotplug-watcher.sh):
#   1. guest writes "HOTPLUG_REQUEST <op>" to the result channel ($RESULT_DEV),
#      op = add | resize | remove
#   2. host edits the config / backing file, sends fathomd SIGHUP, and
#      publishes "ok ..." or "error ..." at http://$HOST_ADDR:$ACK_PORT/<op>
#   3. guest polls sysfs for the change (up to $HOTPLUG_TIMEOUT s); an "error"
#      ack ends the wait at once. The change must arrive through the existing
#      controller (Namespace Attribute Changed AEN -> kernel rescan): same
#      /dev/nvmeX, same cntlid, state live.
# --selftest defines hotplug_local (guest-nvmet-target.sh), which performs the
# same changes on the in-guest nvmet target and writes the ack locally.
HOST_ADDR=${HOST_ADDR:-10.0.2.2}
ACK_PORT=${ACK_PORT:-0}
HOTPLUG_TIMEOUT=${HOTPLUG_TIMEOUT:-60}
HP_ACK=''

hotplug_request() {  # $1 op
    rm -f "/tmp/hotplug-ack-$1"
    if [ "${HOTPLUG_LOCAL:-0}" = 1 ]; then hotplug_local "$1"; return 0; fi
    say "HOTPLUG_REQUEST $1"
}
hotplug_ack() {  # $1 op; prints the ack once the host has written it
    if [ "${HOTPLUG_LOCAL:-0}" = 1 ]; then cat "/tmp/hotplug-ack-$1" 2>/dev/null; return 0; fi
    # timeout, not wget -T: busybox 1.35's wget segfaults with -T.
    timeout 10 wget -q -O - "http://$HOST_ADDR:$ACK_PORT/$1" 2>/dev/null || true
}

# hp_wait OP CONDITION: polls CONDITION (a function) until true (0), the host
# reports an error (2) or HOTPLUG_TIMEOUT passes (1). HP_ACK = the host's ack.
hp_wait() {
    local op=$1 cond=$2 t_end
    HP_ACK=''
    t_end=$(($(cut -d. -f1 /proc/uptime) + HOTPLUG_TIMEOUT))
    while :; do
        if "$cond"; then
            [ -n "$HP_ACK" ] || HP_ACK=$(hotplug_ack "$op")
            HP_ACK=${HP_ACK:-ack not written yet}; return 0
        fi
        [ -n "$HP_ACK" ] || HP_ACK=$(hotplug_ack "$op")
        case $HP_ACK in error*) return 2 ;; esac
        [ "$(cut -d. -f1 /proc/uptime)" -ge "$t_end" ] && { HP_ACK=${HP_ACK:-no ack from host}; return 1; }
        sleep 0.5
    done
}

# After a timeout with a good ack: would a manual rescan have shown the change?
# Tells "target did not send the AEN" apart from "target did not change".
hp_diagnose() {  # $1 label, $2 condition
    run 30 nvme ns-rescan "/dev/$CTRL"
    sleep 2
    if "$2"; then say "INFO: [$1] the change IS visible after a manual 'nvme ns-rescan' (no/ignored AEN?)"
    else say "INFO: [$1] not visible even after a manual 'nvme ns-rescan'"; fi
}

# Same controller, same cntlid, still live: no reconnect happened.
hp_same_ctrl() {  # $1 label
    local now_ctrls state cntlid
    now_ctrls=$(our_ctrls | tr '\n' ' ')
    state=$(cat "/sys/class/nvme/$CTRL/state" 2>/dev/null)
    cntlid=$(cat "/sys/class/nvme/$CTRL/cntlid" 2>/dev/null)
    if [ "$now_ctrls" = "$CTRL " ] && [ "$state" = live ] && [ "$cntlid" = "$HP_CNTLID" ]; then
        pass "[$1] still one controller /dev/$CTRL, cntlid $cntlid, live (no reconnect)"
    else fail "[$1] controller changed: ctrls='$now_ctrls' state='$state' cntlid='$cntlid' (was /dev/$CTRL cntlid $HP_CNTLID)"; fi
}

hp_ns3_present() { HP_DEV3=$(our_nsdev 3) && [ -n "$HP_DEV3" ]; }
hp_ns3_gone()    { [ -z "$(our_nsdev 3)" ]; }
hp_ns1_grown()   { [ "$(cat "/sys/block/$HP_NS1/size" 2>/dev/null || echo 0)" -ne "$HP_SIZE0" ]; }

# Report the outcome of hp_wait: $1 label, $2 rc, $3 condition, $4 what.
hp_report_wait() {
    case $2 in
        0) return 0 ;;
        2) fail "[$1] host could not apply the change: $HP_ACK" ;;
        *) fail "[$1] $4 not seen within ${HOTPLUG_TIMEOUT}s (host: $HP_ACK)"; hp_diagnose "$1" "$3" ;;
    esac
    return 1
}

hp_add() {
    local L=hotplug-add r p b nsze='' found=''
    hotplug_request add
    hp_wait add hp_ns3_present; r=$?
    hp_report_wait $L $r hp_ns3_present "a block device for nsid 3" || return 1
    say "INFO: [$L] host: $HP_ACK"
    # The new namespace must hang off the controller we already had: its
    # per-path node (multipath) or disk sits in that controller's sysfs dir.
    for p in /sys/class/nvme/"$CTRL"/nvme*n*; do
        [ "$(cat "$p/nsid" 2>/dev/null)" = 3 ] && found=${p##*/}
    done
    [ -n "$found" ] && pass "[$L] nsid 3 appeared as $HP_DEV3 (path $found of /dev/$CTRL)" \
                    || fail "[$L] nsid 3 appeared as $HP_DEV3 but not under /dev/$CTRL"
    hp_same_ctrl $L
    # 32 MiB whatever the LBA size (512 on fathomd, 4096 on nvmet with a file).
    b=$(cat "/sys/block/${HP_DEV3#/dev/}/queue/logical_block_size")
    if run 30 nvme id-ns "$HP_DEV3" && nsze=$(awk -F: '$1 ~ /^nsze *$/ {gsub(/ /, "", $2); print $2}' /tmp/out) &&
       is_num "$nsze" && [ $((nsze * b)) -eq 33554432 ]; then
        pass "[$L] id-ns $HP_DEV3: nsze $nsze x $b bytes = 32 MiB"
    else fail "[$L] id-ns $HP_DEV3: nsze '${nsze:-}' x $b bytes, want 32 MiB ($(head -n1 /tmp/out))"; fi
}

hp_resize() {
    local L=hotplug-resize r size
    HP_NS1=${NSDEV#/dev/}
    HP_SIZE0=$(cat "/sys/block/$HP_NS1/size")
    hotplug_request resize
    hp_wait resize hp_ns1_grown; r=$?
    hp_report_wait $L $r hp_ns1_grown "a size change of $NSDEV" || return 1
    say "INFO: [$L] host: $HP_ACK"
    sleep 1   # let a second update (if any) land before judging the size
    size=$(cat "/sys/block/$HP_NS1/size")
    if [ "$size" -eq $((HP_SIZE0 + 131072)) ]; then
        pass "[$L] $NSDEV grew from $HP_SIZE0 to $size sectors (+64 MiB)"
    else fail "[$L] $NSDEV size $HP_SIZE0 -> $size sectors, want +131072"; fi
    hp_same_ctrl $L
}

hp_remove() {
    local L=hotplug-remove r
    hotplug_request remove
    hp_wait remove hp_ns3_gone; r=$?
    hp_report_wait $L $r hp_ns3_gone "removal of $HP_DEV3" || return 1
    say "INFO: [$L] host: $HP_ACK"
    pass "[$L] nsid 3 ($HP_DEV3) disappeared"
    hp_same_ctrl $L
}

test_hotplug() {
    local added=0 add_ack
    if connect hotplug; then
        HP_CNTLID=$(cat "/sys/class/nvme/$CTRL/cntlid")
        HP_DEV3=''
        hp_add && added=1
        add_ack=$HP_ACK
        hp_resize
        if [ $added = 1 ]; then hp_remove
        else
            # The host may have added nsid 3 to its config although we never
            # saw it: ask for the removal anyway, so the target ends as it began.
            case $add_ack in ok*) hotplug_request remove ;; esac
            fail "[hotplug-remove] not tested: hot add did not work"
        fi
    fi
    if [ -n "$(our_ctrls)" ] || [ -n "$CTRL" ]; then disconnect hotplug; fi
}
