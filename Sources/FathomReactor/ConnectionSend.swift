import CLiburing
import NVMeWire
#if canImport(Glibc)
import Glibc
#endif

/// The send side: queued PDUs leave in one SENDMSG per batch, headers from the slots'
/// header areas and data straight from the command buffers (no copy).
extension Connection {
    /// Queues a PDU. Sending waits until the reactor has handled every completion of this
    /// loop iteration, so all responses a recv produced leave in one SENDMSG.
    @inline(__always)
    func enqueue(_ item: Int32) {
        sendQueue.append(item)
        if !flushScheduled {
            flushScheduled = true
            reactor.scheduleFlush(self)
        }
    }

    /// Starts a SENDMSG of everything queued, unless one is already in flight (one at a time
    /// keeps the byte stream in order).
    func flushSends() {
        guard !sendInFlight, sendHead < sendQueue.count, state != .closing else { return }
        iovStart = 0
        iovCount = 0
        batch.removeAll(keepingCapacity: true)
        let hd = digests.headerDigestLength
        var dataBytes = 0
        var responsesOnly = true
        while sendHead < sendQueue.count && iovCount + 4 <= Self.iovCapacity {
            let item = sendQueue[sendHead]
            sendHead += 1
            batch.append(item)
            if item == Self.controlItem {
                responsesOnly = false
                addIOV(control, controlLength)
            } else if item & Self.r2tFlag != 0 {
                responsesOnly = false
                let i = Int(item & ~Self.r2tFlag)
                addIOV(slots.header(i) + 64, 24 + hd)
            } else {
                let i = Int(item)
                let s = slots[i]
                let hdr = slots.header(i)
                if s.pointee.c2hLength > 0 {
                    dataBytes += s.pointee.c2hLength
                    addIOV(hdr, 24 + hd)
                    addIOV(s.pointee.data!, s.pointee.c2hLength)
                    if digests.data { addIOV(hdr + 96, 4) }
                }
                if !s.pointee.skipResponse { addIOV(hdr + 32, 24 + hd) }
            }
        }
        if sendHead == sendQueue.count {
            sendQueue.removeAll(keepingCapacity: true)
            sendHead = 0
        }
        sendIsZeroCopy = responsesOnly && shouldSendZeroCopy(dataBytes: dataBytes, slots: batch.count)
        if sendIsZeroCopy { beginZeroCopyBatch() }
        submitSend()
    }

    @inline(__always)
    private func addIOV(_ base: UnsafeMutableRawPointer, _ length: Int) {
        iov[iovCount] = iovec(iov_base: base, iov_len: length)
        iovCount += 1
    }

    func submitSend() {
        msg.pointee.msg_iov = iov + iovStart
        msg.pointee.msg_iovlen = iovCount - iovStart
        let sqe: UnsafeMutablePointer<io_uring_sqe>
        if sendIsZeroCopy {
            sqe = submissions.sqe(userData(.send, slot: Int(zeroCopySequence)))
            io_uring_prep_sendmsg_zc(sqe, socketRef, msg, UInt32(MSG_NOSIGNAL))
            fathom_sqe_set_ioprio_flags(sqe, fathom_IORING_SEND_ZC_REPORT_USAGE)
        } else {
            sqe = submissions.sqe(userData(.send))
            io_uring_prep_sendmsg(sqe, socketRef, msg, UInt32(MSG_NOSIGNAL))
        }
        markSocket(sqe)
        sendInFlight = true
        inflight += 1
    }

    /// The send in flight finished with `result` bytes. `moreComing`: it was a zero-copy
    /// send whose notification (the kernel letting go of the memory) is still to come.
    func sendCompleted(_ result: Int32, moreComing: Bool) {
        sendInFlight = false
        inflight -= 1
        if moreComing { zeroCopyNotificationExpected() }
        if state == .closing { return finishIfIdle() }
        if result == -EINVAL && sendIsZeroCopy && !moreComing {
            return zeroCopyRefused()  // a kernel without the usage report (6.1): send plainly
        }
        guard result > 0 else {
            close("send failed: \(result == 0 ? "connection closed" : String(cString: strerror(-result)))")
            return
        }
        var left = Int(result)
        while left > 0 && iovStart < iovCount {
            let len = iov[iovStart].iov_len
            if len <= left {
                left -= len
                iovStart += 1
            } else {
                iov[iovStart].iov_base += left
                iov[iovStart].iov_len -= left
                left = 0
            }
        }
        if iovStart < iovCount { return submitSend() }  // short send: the rest of the batch
        if sendIsZeroCopy {
            holdZeroCopyBatch()  // its slots go when the kernel no longer reads their memory
        } else {
            for item in batch where item != Self.controlItem && item & Self.r2tFlag == 0 {
                releaseSlot(Int(item))
            }
        }
        batch.removeAll(keepingCapacity: true)
        if closeAfterSend && sendHead >= sendQueue.count {
            close(closeReason.isEmpty ? "closed after final PDU" : closeReason)
            return
        }
        flushSends()
    }
}
