# guest-acl.sh — defines test_acl for guest-tests.sh (concatenated before it by
# kernel-e2e.sh; uses its helpers and guest-hotplug.sh's request channel).
#
# Host access control changed live with fathomctl (host half: hotplug-watcher.sh):
#   acl-create          fathomctl subsystem add $ACL_NQN (one other host allowed) + a namespace
#   acl-allow HOSTNQN   fathomctl host allow  --subsystem $ACL_NQN HOSTNQN
#   acl-deny HOSTNQN    fathomctl host deny   --subsystem $ACL_NQN HOSTNQN
#   acl-remove          fathomctl subsystem remove $ACL_NQN
# The guest checks: a host not on the list neither sees the subsystem in the
# discovery log nor connects; once allowed it connects and reads; once denied
# its controller is cut off and reconnects fail.
ACL_NQN=${ACL_NQN:-nqn.2026-11.io.fathom:e2e-acl}

acl_request() {  # $1 op, rest args; waits up to 90 s for the host's ack (TCG guests can be slow), prints it
    local op=$1 t_end ack=''
    say "HOTPLUG_REQUEST $*" >&2   # stdout is the ack this prints
    t_end=$(($(cut -d. -f1 /proc/uptime) + 90))
    while [ -z "$ack" ] && [ "$(cut -d. -f1 /proc/uptime)" -lt "$t_end" ]; do
        sleep 0.5
        ack=$(hotplug_ack "$op")
    done
    echo "${ack:-no ack from host}"
}

acl_ok() {  # $1 label, $2 ack
    case $2 in ok*) say "INFO: [$1] host: $2"; return 0 ;; esac
    fail "[$1] host could not apply the change: $2"; return 1
}

# The discovery-only port (no subsystems of its own) lists the I/O port's
# subsystems, pointing at the I/O port, plus its referral.
check_discovery_port() {
    local L=discovery-port
    [ -n "${DISCOVERY_PORT:-}" ] || { say "INFO: [$L] no discovery-only port configured"; return 0; }
    if ! run 60 nvme discover -t tcp -a "$TARGET_ADDR" -s "$DISCOVERY_PORT"; then
        fail "[$L] nvme discover on the discovery-only port $DISCOVERY_PORT failed"; return 1
    fi
    if grep -q "subnqn: *$SUBNQN" /tmp/out && grep -q "trsvcid: *$TARGET_PORT" /tmp/out; then
        pass "[$L] port $DISCOVERY_PORT lists $SUBNQN at trsvcid $TARGET_PORT"
    else fail "[$L] port $DISCOVERY_PORT does not list $SUBNQN at $TARGET_PORT"; fi
    if grep -q "traddr: *192.0.2.9" /tmp/out && grep -qi "subtype:.*referral" /tmp/out; then
        pass "[$L] the referral to 192.0.2.9:8009 is listed"
    else fail "[$L] the referral to 192.0.2.9 is missing"; fi
}

test_acl() {
    local me ack dev state i
    check_discovery_port
    me=$(cat /etc/nvme/hostnqn)
    ack=$(acl_request acl-create); acl_ok acl-create "$ack" || return 1

    run 60 nvme discover -t tcp -a "$TARGET_ADDR" -s "$TARGET_PORT"
    if grep -q "$ACL_NQN" /tmp/out; then fail "[acl] the discovery log shows $ACL_NQN to a host not on its list"
    else pass "[acl] the discovery log hides $ACL_NQN from a host not on its list"; fi
    if run 60 nvme connect -t tcp -a "$TARGET_ADDR" -s "$TARGET_PORT" -n "$ACL_NQN" --ctrl-loss-tmo=5; then
        fail "[acl] nvme connect to $ACL_NQN succeeded for a host not on its list"
        run 30 nvme disconnect -n "$ACL_NQN"
    else pass "[acl] nvme connect refused for a host not on the list: $(grep -v '^+' /tmp/out | head -n1)"; fi

    ack=$(acl_request acl-allow "$me"); acl_ok acl-allow "$ack" || return 1
    if run 60 nvme connect -t tcp -a "$TARGET_ADDR" -s "$TARGET_PORT" -n "$ACL_NQN" --ctrl-loss-tmo=5 &&
       dev=$(wait_nsdev 1 "$ACL_NQN" 20) && [ -n "$dev" ]; then
        if dd if="$dev" bs=4096 count=16 iflag=direct 2>/dev/null | cmp -s - /dev/zero -n 65536; then
            pass "[acl] after fathomctl host allow: connected, $dev reads"
        else fail "[acl] after fathomctl host allow: $dev did not read back zeros"; fi
    else
        fail "[acl] nvme connect after fathomctl host allow failed"; acl_request acl-remove >/dev/null; return 1
    fi

    ack=$(acl_request acl-deny "$me"); acl_ok acl-deny "$ack"
    # The target ends the controller; the kernel's reconnects are refused (Connect
    # Invalid Host), so the controller never becomes live again.
    state=live i=0
    while [ $i -lt 20 ]; do
        state=$(cat /sys/class/nvme/"$(our_ctrls "$ACL_NQN" | head -n1)"/state 2>/dev/null || echo gone)
        [ "$state" != live ] && break
        sleep 0.5; i=$((i + 1))
    done
    sleep 3
    state=$(cat /sys/class/nvme/"$(our_ctrls "$ACL_NQN" | head -n1)"/state 2>/dev/null || echo gone)
    if [ "$state" != live ]; then pass "[acl] after fathomctl host deny: the controller was cut off and stays down (state $state)"
    else fail "[acl] after fathomctl host deny the controller is still live"; fi
    dmesg | grep -i -m2 'invalid host\|connect.*failed\|could not connect' | sed 's/^/INFO: [acl] dmesg: /' | while read -r l; do say "$l"; done
    run 30 nvme disconnect -n "$ACL_NQN" >/dev/null
    ack=$(acl_request acl-remove); acl_ok acl-remove "$ack"
}
