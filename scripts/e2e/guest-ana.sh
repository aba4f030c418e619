# guest-ana.sh — defines test_ana for guest-tests.sh (concatenated before it by
# kernel-e2e.sh; uses its helpers and guest-acl.sh's acl_request/acl_ok).
#
# Native multipath with ANA: the host connects to $SUBNQN through two ports (the
# usual one and $ANA_PORT, added by the host with `fathomctl port add`), so nsid 1 has
# two paths under one /dev/nvmeXnY. The host side then makes group 1 inaccessible
# through the first port (`fathomctl port ana`): the kernel must see the ANA change,
# mark that path inaccessible, and keep reading and writing through the other one.
ANA_PORT=${ANA_PORT:-}

ana_path_state() {  # $1 controller: the ANA state of its path to nsid 1
    local p
    for p in /sys/class/nvme/"$1"/nvme*c*n*; do
        [ "$(cat "$p/nsid" 2>/dev/null)" = 1 ] && { cat "$p/ana_state" 2>/dev/null; return; }
    done
}

ana_ctrl_on_port() {  # $1 trsvcid: our controller connected through it
    local c
    for c in $(our_ctrls); do
        grep -q "trsvcid=$1" "/sys/class/nvme/$c/address" 2>/dev/null && { echo "$c"; return; }
    done
}

ana_wait_state() {  # $1 controller, $2 state; up to 30 s
    local i=0
    while [ "$(ana_path_state "$1")" != "$2" ] && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
    [ "$(ana_path_state "$1")" = "$2" ]
}

test_ana() {
    local L=ana c1 c2 dev ack opts blk=8192
    [ -n "$ANA_PORT" ] || { fail "[$L] the host added no second port (see the kernel-e2e log)"; return; }
    connect "$L" || return
    # The second path as the same host (NQN and ID), written to /dev/nvme-fabrics the way
    # nvme-cli does: nvme-cli 2.3 may call it "already connected" (its check ignores trsvcid).
    opts="nqn=$SUBNQN,transport=tcp,traddr=$TARGET_ADDR,trsvcid=$ANA_PORT,hostnqn=$(cat /etc/nvme/hostnqn)"
    opts="$opts,hostid=$(cat /etc/nvme/hostid),ctrl_loss_tmo=30"
    if ! echo -n "$opts" > /dev/nvme-fabrics; then
        fail "[$L] second path (port $ANA_PORT): connect failed: $(dmesg | tail -n2 | tr '\n' ' ')"; disconnect "$L"; return
    fi
    sleep 2
    c1=$(ana_ctrl_on_port "$TARGET_PORT"); c2=$(ana_ctrl_on_port "$ANA_PORT")
    dev=$(our_nsdev 1)
    if [ -n "$c1" ] && [ -n "$c2" ] && [ -n "$dev" ] && ana_wait_state "$c1" optimized && ana_wait_state "$c2" optimized; then
        pass "[$L] two paths to nsid 1 under $dev: /dev/$c1 (port $TARGET_PORT) and /dev/$c2 (port $ANA_PORT), both optimized"
    else
        fail "[$L] want two optimized paths: ctrls '$c1' '$c2', dev '$dev', states '$(ana_path_state "$c1")' '$(ana_path_state "$c2")'"
        run 60 nvme disconnect -n "$SUBNQN"; return
    fi
    head -c 4096 /dev/urandom > /tmp/ana-a
    dd if=/tmp/ana-a of="$dev" bs=4096 seek=$blk count=1 oflag=direct conv=fsync 2>/dev/null || fail "[$L] write before the change"

    ack=$(acl_request ana-inaccessible); acl_ok ana-inaccessible "$ack"
    if ana_wait_state "$c1" inaccessible; then
        pass "[$L] the kernel saw the ANA change: path /dev/$c1 inaccessible, /dev/$c2 $(ana_path_state "$c2")"
    else fail "[$L] path /dev/$c1 state '$(ana_path_state "$c1")' after fathomctl port ana ... inaccessible"; fi
    # I/O keeps working through the other path.
    echo 3 > /proc/sys/vm/drop_caches
    if dd if="$dev" bs=4096 skip=$blk count=1 iflag=direct 2>/dev/null | cmp -s - /tmp/ana-a; then
        pass "[$L] reads through $dev still return the data (served by /dev/$c2)"
    else fail "[$L] read through $dev after the change"; fi
    head -c 4096 /dev/urandom > /tmp/ana-b
    if dd if=/tmp/ana-b of="$dev" bs=4096 seek=$((blk + 1)) count=1 oflag=direct conv=fsync 2>/dev/null &&
       dd if="$dev" bs=4096 skip=$((blk + 1)) count=1 iflag=direct 2>/dev/null | cmp -s - /tmp/ana-b; then
        pass "[$L] writes through $dev keep working with one path inaccessible"
    else fail "[$L] write through $dev after the change"; fi

    ack=$(acl_request ana-optimized); acl_ok ana-optimized "$ack"
    ana_wait_state "$c1" optimized && pass "[$L] path /dev/$c1 optimized again" \
        || fail "[$L] path /dev/$c1 state '$(ana_path_state "$c1")' after setting it optimized"
    disconnect "$L"
}
