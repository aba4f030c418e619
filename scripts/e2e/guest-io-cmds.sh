# guest-io-cmds.sh — defines test_io_cmds for guest-tests.sh (concatenated
# before it by kernel-e2e.sh; uses its helpers: run, pass, fail, connect, ...).
#
# One connection to $SUBNQN, then the sub-checks in $IO_CMDS:
#   rawblock     nsid 2 (a host loop device): fio 4k randwrite + crc32c verify
#   write_zeroes nvme write-zeroes on nsid 1 after writing data there
#   discard      blkdiscard on nsid 1 after writing data there
#   compare      nvme compare on nsid 1: same data succeeds, other data fails
#   reservations nvme resv-register/-acquire/-report/-release on nsid 1
# All offsets are away from each other and from nothing else that matters
# (the core fio jobs ran earlier and their data is not needed any more).
# All reads and writes use O_DIRECT, so the page cache never answers for the target.
IO_CMDS=${IO_CMDS:-rawblock write_zeroes discard compare reservations}
FIO_RAWBLOCK_SIZE=${FIO_RAWBLOCK_SIZE:-8M}

# The namespace's LBA size: 512 for fathomd's default, but nvmet (--selftest)
# uses 4096 for files, so LBAs are derived from byte offsets.
lbs() { cat "/sys/block/${NSDEV#/dev/}/queue/logical_block_size"; }
# blk_write DEV OFFSET FILE / blk_read DEV OFFSET LEN OUT: bytes, O_DIRECT,
# 64 KiB per request (busybox dd: byte offsets via the *_bytes flags).
blk_write() { dd if="$3" of="$1" bs=65536 seek="$2" oflag=seek_bytes,direct 2>/tmp/dd.err; }
blk_read()  { dd if="$1" of="$4" bs=65536 skip="$2" count="$3" iflag=skip_bytes,count_bytes,direct 2>/tmp/dd.err; }
# zeros_after L OFFSET LEN WHAT: true if the byte range reads back as zeros.
zeros_after() {
    head -c "$3" /dev/zero > /tmp/zeros
    if ! blk_read "$NSDEV" "$2" "$3" /tmp/back; then fail "[$1] read back after $4: $(cat /tmp/dd.err)"; return 1; fi
    if cmp -s /tmp/zeros /tmp/back; then return 0; fi
    fail "[$1] $4: bytes $2+$3 not zero afterwards ($(cmp /tmp/zeros /tmp/back 2>&1 | head -n1); first bytes $(hexdump -n 8 -e '8/1 "%02x"' /tmp/back))"
    return 1
}
# fill L OFFSET LEN: write random data and make sure it reads back (so a later
# "reads as zeros" cannot pass because the write never happened).
fill() {
    head -c "$3" /dev/urandom > /tmp/pat
    if blk_write "$NSDEV" "$2" /tmp/pat && blk_read "$NSDEV" "$2" "$3" /tmp/back && cmp -s /tmp/pat /tmp/back; then
        return 0
    fi
    fail "[$1] setup: $3 bytes of data written at offset $2 did not read back ($(tail -n1 /tmp/dd.err))"
    return 1
}

io_rawblock() {
    local L=rawblock dev keep=$NSDEV
    if ! dev=$(wait_nsdev 2 "$SUBNQN" 10); then
        fail "[$L] no block device for nsid 2 of $SUBNQN (host loop device exported?)"; return
    fi
    if run 30 nvme id-ns "$dev" && grep -q '^nsze' /tmp/out; then
        pass "[$L] nsid 2 -> $dev, id-ns $(grep -E '^nsze' /tmp/out | tr -s ' ')"
    else fail "[$L] id-ns $dev"; fi
    NSDEV=$dev
    fio_job "$L" randwrite-4k randwrite 4k "$FIO_RAWBLOCK_SIZE"
    NSDEV=$keep
}

io_write_zeroes() {  # 64 KiB at 1 MiB
    local L=write-zeroes off=1048576 len=65536 b r lba n
    b=$(lbs); lba=$((off / b)); n=$((len / b))
    fill $L $off $len || return
    run 30 nvme write-zeroes "$NSDEV" -s $lba -c $((n - 1)); r=$?
    if [ $r -ne 0 ]; then
        fail "[$L] nvme write-zeroes $NSDEV -s $lba -c $((n - 1)): rc=$r $(head -n1 /tmp/out)"; return
    fi
    zeros_after $L $off $len "write-zeroes" && pass "[$L] $n blocks at LBA $lba (${b}-byte LBAs) read back as zeros"
}

io_discard() {
    local L=discard r d=${NSDEV#/dev/}
    say "INFO: [$L] $d discard_max_bytes=$(cat "/sys/block/$d/queue/discard_max_bytes" 2>/dev/null) granularity=$(cat "/sys/block/$d/queue/discard_granularity" 2>/dev/null)"
    run 30 nvme id-ns "$NSDEV" >/dev/null && say "INFO: [$L] id-ns $(grep -E '^dlfeat' /tmp/out | tr -s ' ')"
    fill $L 0 1048576 || return
    run 60 blkdiscard -o 0 -l 1048576 "$NSDEV"; r=$?
    if [ $r -ne 0 ]; then
        fail "[$L] blkdiscard -o 0 -l 1048576 $NSDEV: rc=$r $(head -n1 /tmp/out)"; return
    fi
    zeros_after $L 0 1048576 "blkdiscard" && pass "[$L] blkdiscard of 1 MiB, range reads back as zeros"
}

io_compare() {  # one LBA at 2 MiB
    local L=compare b r lba
    b=$(lbs); lba=$((2097152 / b))
    fill $L 2097152 "$b" || return
    cp /tmp/pat /tmp/cmp-same
    head -c "$b" /dev/urandom > /tmp/cmp-diff
    cmp -s /tmp/cmp-same /tmp/cmp-diff && head -c "$b" /dev/zero > /tmp/cmp-diff  # 2^-4096, but be exact
    run 30 nvme compare "$NSDEV" -s $lba -c 0 -z "$b" -d /tmp/cmp-same; r=$?
    if [ $r -eq 0 ]; then pass "[$L] nvme compare with the data just written succeeds"
    else fail "[$L] nvme compare with identical data: rc=$r $(head -n1 /tmp/out)"; fi
    # Must be a miscompare, not just any error (an unsupported opcode fails too).
    if run 30 nvme compare "$NSDEV" -s $lba -c 0 -z "$b" -d /tmp/cmp-diff; then
        fail "[$L] nvme compare with different data succeeded"
    elif grep -qi 'compare failure' /tmp/out; then
        pass "[$L] nvme compare with different data fails: $(grep -i 'status' /tmp/out | head -n1)"
    else fail "[$L] nvme compare with different data failed without Compare Failure status: $(head -n1 /tmp/out)"; fi
}

# resv_report: the extended report as one line of JSON without spaces, in /tmp/resv.
resv_report() { run 30 nvme resv-report "$NSDEV" -n 1 --eds -o json && tr -d ' \n' < /tmp/out > /tmp/resv; }

io_reservations() {  # key 0xabc = 2748; Write Exclusive = type 1
    local L=reservations
    if run 30 nvme resv-register "$NSDEV" -n 1 --nrkey=0xabc --rrega=0; then pass "[$L] resv-register key 0xabc"
    else fail "[$L] resv-register: $(head -n1 /tmp/out)"; return; fi
    if run 30 nvme resv-acquire "$NSDEV" -n 1 --crkey=0xabc --rtype=1 --racqa=0; then pass "[$L] resv-acquire Write Exclusive"
    else fail "[$L] resv-acquire: $(head -n1 /tmp/out)"; fi
    if resv_report && grep -q '"rtype":1' /tmp/resv && grep -q '"regctl":1' /tmp/resv && grep -q '"rkey":2748' /tmp/resv; then
        pass "[$L] resv-report --eds: one registrant, key 0xabc, holds Write Exclusive"
    else fail "[$L] resv-report --eds: $(head -c 300 /tmp/resv 2>/dev/null) $(head -n1 /tmp/out)"; fi
    # Fabrics host IDs are 128 bits: the 64-bit report form must be refused, not garbled.
    if run 30 nvme resv-report "$NSDEV" -n 1; then fail "[$L] resv-report without --eds succeeded"
    elif grep -qi 'host identifier inconsistent' /tmp/out; then pass "[$L] resv-report without --eds refused: Host Identifier Inconsistent Format"
    else fail "[$L] resv-report without --eds: unexpected $(head -n1 /tmp/out)"; fi
    # The holder keeps writing.
    head -c 4096 /dev/urandom > /tmp/resv-data
    if blk_write "$NSDEV" 3145728 /tmp/resv-data; then pass "[$L] the holder writes while holding Write Exclusive"
    else fail "[$L] holder write: $(cat /tmp/dd.err)"; fi
    if run 30 nvme resv-release "$NSDEV" -n 1 --crkey=0xabc --rtype=1 --rrela=0; then pass "[$L] resv-release"
    else fail "[$L] resv-release: $(head -n1 /tmp/out)"; fi
    if run 30 nvme resv-register "$NSDEV" -n 1 --crkey=0xabc --rrega=1 && resv_report && grep -q '"rtype":0' /tmp/resv \
       && grep -q '"regctl":0' /tmp/resv; then pass "[$L] unregistered: report shows no registrant and no reservation"
    else fail "[$L] unregister/report: $(head -c 300 /tmp/resv 2>/dev/null) $(head -n1 /tmp/out)"; fi
}

test_io_cmds() {
    local c
    if connect io-cmds; then
        for c in $IO_CMDS; do "io_$c"; done
    fi
    if [ -n "$(our_ctrls)" ] || [ -n "$CTRL" ]; then disconnect io-cmds; fi
}
