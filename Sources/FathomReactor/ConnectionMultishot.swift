import CLiburing
#if canImport(Glibc)
import Glibc
#endif

/// Multishot recv (`ReceiveMode.multishot`): one recv armed per connection, which the kernel
/// completes each time bytes arrive, into a buffer of the connection's `ReceiveBufferRing`.
///
/// A buffer is parsed where it lies: headers are decoded from it and payload bytes copied from
/// it into command buffers, as from the staging buffer. Only the tail of a PDU cut by the
/// buffer's end (a partial header or digest, at most a few hundred bytes) moves to the staging
/// buffer, and the next buffer tops that up a little at a time until it parses; the buffer then
/// goes back to the ring at once. So the parser sees the bytes in order, always contiguous, and
/// nothing points into a provided buffer after its completion is handled.
///
/// It is for command traffic: reads, flushes, admin commands, whose capsules are small. When
/// write data flows (`noteDataTraffic`) the multishot recv is cancelled and the connection
/// reads with single recvs as `ReceiveMode.single` does (payloads straight into command
/// buffers, 64 KiB of PDUs per recv into staging); the bytes that landed in provided buffers
/// before the cancellation took effect are parsed from there first, in order.
///
/// User data of recv-side SQEs (the slot field): `singleRecvTag` for a one-shot recv,
/// `cancelTag` for a cancellation, `multishotTagBit | sequence` for a multishot recv, so a
/// cancellation names exactly the recv it meant even when a new one is armed meanwhile.
extension Connection {
    static let singleRecvTag = 0
    static let cancelTag = 1
    static let multishotTagBit = 0x100
    /// Bytes moved to staging per step while a cut PDU is completed: more than the largest
    /// header with its digest (ICReq, 128), so one step completes any header.
    static let topUpBytes = 256
    /// Payloads up to this size (a Connect's 1 KiB, one-block writes) go through the provided
    /// buffers without making the connection leave multishot recv.
    static let smallPayloadBytes = 2048
    /// Capsules without a payload in a row after which the multishot recv is armed again.
    static let quietCapsulesForMultishot = 32

    /// Gives the connection a buffer ring when multishot recv is configured and the kernel
    /// takes buffer rings (the group ID is the connection's index, unique in its reactor).
    func setUpReceiveRing() {
        let ring = reactor.ring!
        guard reactor.settings.receiveMode == .multishot, !ring.multishotReceiveRefused, ring.supportsBufferRings,
              index < Int(Ring.probeBufferGroup) else { return }
        receiveRing = ReceiveBufferRing(ring: ring, group: UInt16(index))
        if receiveRing != nil { reactor.server?.countMultishotConnection() }
    }

    func armMultishot() {
        guard let r = receiveRing else { return }
        multishotSequence = (multishotSequence + 1) & 0xFF
        let sqe = submissions.sqe(userData(.recv, slot: Self.multishotTagBit | multishotSequence))
        fathom_prep_recv_multishot(sqe, socketRef, r.group)
        sqe.pointee.ioprio |= Ring.extraMultishotRecvFlagsForTests
        markSocket(sqe)
        reactor.server?.countMultishotArm()
        recvInFlight = true
        recvDirect = false
        inflight += 1
    }

    /// A completion of the armed multishot recv (only one is armed at a time: the next is
    /// armed after this one's last completion, the one without IORING_CQE_F_MORE).
    func multishotCompleted(_ result: Int32, flags: UInt32) {
        let more = flags & fathom_IORING_CQE_F_MORE != 0
        if !more {
            inflight -= 1
            recvInFlight = false
        }
        if state == .closing { return finishIfIdle() }
        if result > 0 {
            guard flags & fathom_IORING_CQE_F_BUFFER != 0 else {
                close("multishot recv completed without a buffer")
                return
            }
            consumeProvided(bid: Int(flags >> fathom_IORING_CQE_BUFFER_SHIFT), length: Int(result))
            if state == .closing { return }
        } else if result == 0 {
            close("host closed the connection")
            return
        } else if result == -EINVAL && !more, let r = receiveRing {
            // A kernel with buffer rings but without multishot recv (5.19): plain recvs from now on.
            reactor.ring.multishotReceiveRefused = true
            logger.warning("the kernel refused multishot recv; connections read with one recv per read")
            r.release(ring: reactor.ring)
            receiveRing = nil
        } else if result == -ENOBUFS {
            reactor.server?.countBufferRingRanDry()
        } else if result != -ECANCELED {
            close("recv failed: \(String(cString: strerror(-result)))")
            return
        }
        // ENOBUFS: every buffer was in use when bytes came (all are back now unless reading
        // stopped); ECANCELED: this connection asked for it (write data began to flow).
        if !recvInFlight { postRecv() }
    }

    /// Parses `length` bytes of provided buffer `bid` (see the type's comment), then returns
    /// the buffer to the ring. A connection that stopped reading keeps the buffer: the ring
    /// runs dry and the kernel ends the multishot recv, which is not armed again.
    private func consumeProvided(bid: Int, length: Int) {
        guard let r = receiveRing else { return }
        let base = r.address(bid)
        var offset = 0
        while offset < length && !stopReading && state != .closing {
            if rxStart == rxEnd {
                input = base + offset
                rxStart = 0
                rxEnd = length - offset
                offset = length
                processInput()
                let tail = rxEnd - rxStart
                if tail > 0 && !stopReading { staging.copyMemory(from: input + rxStart, byteCount: tail) }
                input = staging
                rxStart = 0
                rxEnd = stopReading ? 0 : tail
            } else {
                compactStaging(room: Self.topUpBytes)
                let n = min(length - offset, Self.topUpBytes)
                (staging + rxEnd).copyMemory(from: base + offset, byteCount: n)
                rxEnd += n
                offset += n
                processInput()
            }
        }
        if !stopReading && state != .closing { r.recycle(bid) }
    }

    /// A capsule with a payload above `smallPayloadBytes` arrived, or an R2T went out: write
    /// data is flowing, which reads better with single recvs (a 64 KiB recv into staging
    /// takes several PDUs at once, a large payload goes straight into its command buffer) than
    /// through small provided buffers, whose ring a stream of write data also keeps running
    /// dry. Measured with the multishot recv kept for everything (eight 8 KiB buffers then):
    /// 4 KiB random writes 0.95×, 16 KiB 0.79×, 128 KiB sequential writes 0.86× against single
    /// recvs (QD32, memory namespace). So the multishot recv is cancelled, and armed again once
    /// `quietCapsulesForMultishot` capsules in a row came without data.
    func noteDataTraffic() {
        quietCapsules = 0
        if receiveRing != nil && cancelMultishot() { reactor.server?.countMultishotLeftForData() }
    }

    /// Cancels the armed multishot recv; false when none is armed or a cancel is out already.
    private func cancelMultishot() -> Bool {
        guard !cancelPending, recvInFlight, !recvDirect else { return false }
        let sqe = submissions.sqe(userData(.recv, slot: Self.cancelTag))
        io_uring_prep_cancel64(sqe, userData(.recv, slot: Self.multishotTagBit | multishotSequence), 0)
        cancelPending = true
        inflight += 1
        return true
    }

    /// The cancellation's own completion (ENOENT when the recv had ended already: harmless).
    func cancelCompleted() {
        cancelPending = false
        inflight -= 1
        if state == .closing { finishIfIdle() }
    }
}
