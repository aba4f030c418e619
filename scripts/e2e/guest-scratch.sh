# guest-scratch.sh — defines test_scratch for guest-tests.sh (concatenated
# before it by kernel-e2e.sh, so its helpers are in scope when this runs).
#
# Writable scratch on the storage node's /dev/shm: subsystem $SCRATCH_NQN,
# namespace 1 = a sparse file on tmpfs that fathomd writes through the file's
# mapping (its reads stay on pread: the file has holes). The same fio jobs as
# the core sessions, with header and data digests: what fio reads back and
# verifies is what the mapped writes put into the file.
SCRATCH_NQN=${SCRATCH_NQN:-}

test_scratch() {
    [ -n "$SCRATCH_NQN" ] || { fail "[scratch] the host did not set up a scratch subsystem (see the kernel-e2e log)"; return; }
    local core=$SUBNQN
    SUBNQN=$SCRATCH_NQN
    session scratch -g -G
    SUBNQN=$core
}
