import CLiburing
#if canImport(Glibc)
import Glibc
#endif

/// One SENDMSG_ZC batch: its slots stay allocated (their headers and data are what the
/// kernel sends from) until every notification of the batch's submissions has arrived.
struct ZeroCopyBatch {
    var sequence: UInt16
    /// Slots of the batch, at the front of `zeroCopyHeld` once the batch is fully sent.
    var slots = 0
    var notificationsPending = 0
    var sent = false
}

/// Zero-copy sends of C2H data (Linux 6.1+ SENDMSG_ZC).
///
/// A zero-copy send completes twice: first with the bytes sent, then with a notification once
/// the kernel no longer references the memory (for TCP, once the data is acknowledged). Until
/// then the PDU headers and data of the batch must not change, so its slots are held, not
/// released. Batches with R2Ts or control PDUs never go zero-copy (an R2T's slot is still in
/// use by its command), nor batches that would hold more slots than the queue's depth (the
/// slot table is twice the depth; held slots must never starve commands the host may send).
///
/// On loopback the kernel copies anyway and says so in the notification; with the `auto`
/// policy the connection then goes back to plain SENDMSG for good.
extension Connection {
    func shouldSendZeroCopy(dataBytes: Int, slots: Int) -> Bool {
        guard zeroCopyAllowed, reactor.ring.supportsSendZeroCopy, dataBytes >= reactor.settings.zeroCopySendMinBytes else { return false }
        let held = zeroCopyHeld.count - zeroCopyHeldHead
        return held + slots <= queueSize
    }

    func beginZeroCopyBatch() {
        zeroCopySequence &+= 1
        zeroCopyBatches.append(ZeroCopyBatch(sequence: zeroCopySequence))
    }

    /// The send just completed will be followed by a notification: the kernel still holds
    /// this connection's memory, so teardown must wait for it too.
    func zeroCopyNotificationExpected() {
        inflight += 1
        if zeroCopyBatchesHead < zeroCopyBatches.count {
            zeroCopyBatches[zeroCopyBatches.count - 1].notificationsPending += 1
        }
    }

    /// The batch just sent in full: its slots wait for the notifications.
    func holdZeroCopyBatch() {
        var slots = 0
        for item in batch where item != Self.controlItem && item & Self.r2tFlag == 0 {
            zeroCopyHeld.append(item)
            slots += 1
        }
        zeroCopyBatches[zeroCopyBatches.count - 1].slots = slots
        zeroCopyBatches[zeroCopyBatches.count - 1].sent = true
        releaseNotifiedBatches()
    }

    /// A notification of the batch `sequence`: `result` says whether the kernel copied.
    func zeroCopyNotified(sequence: Int, _ result: Int32) {
        inflight -= 1
        if state == .closing { return finishIfIdle() }
        let copied = UInt32(bitPattern: result) & fathom_IORING_NOTIF_USAGE_ZC_COPIED != 0
        reactor.server?.countZeroCopySend(copied: copied)
        if copied && zeroCopyAllowed && reactor.settings.zeroCopySend == .auto {
            zeroCopyAllowed = false
            logger.debug("SEND_ZC copied on this connection (loopback or no scatter-gather): plain SENDMSG from now on",
                         metadata: ["peer": "\(peer)"])
        }
        for k in zeroCopyBatchesHead..<zeroCopyBatches.count where zeroCopyBatches[k].sequence == UInt16(truncatingIfNeeded: sequence) {
            zeroCopyBatches[k].notificationsPending -= 1
            break
        }
        releaseNotifiedBatches()
    }

    /// The kernel refused SENDMSG_ZC with the usage report (it has SEND_ZC but predates the
    /// report, Linux 6.1): nothing was sent, so the same batch goes again as a plain SENDMSG,
    /// and no connection of this reactor tries zero copy again.
    func zeroCopyRefused() {
        logger.notice("the kernel refused SENDMSG_ZC with a usage report: zero-copy sends are off on this reactor")
        reactor.ring.supportsSendZeroCopy = false
        zeroCopyAllowed = false
        sendIsZeroCopy = false
        zeroCopyBatches.removeLast()
        submitSend()
    }

    /// Releases, in send order, the slots of batches fully sent and fully notified.
    private func releaseNotifiedBatches() {
        while zeroCopyBatchesHead < zeroCopyBatches.count {
            let b = zeroCopyBatches[zeroCopyBatchesHead]
            guard b.sent && b.notificationsPending <= 0 else { break }
            for k in zeroCopyHeldHead..<(zeroCopyHeldHead + b.slots) { releaseSlot(Int(zeroCopyHeld[k])) }
            zeroCopyHeldHead += b.slots
            zeroCopyBatchesHead += 1
        }
        if zeroCopyBatchesHead == zeroCopyBatches.count {
            zeroCopyBatches.removeAll(keepingCapacity: true)
            zeroCopyBatchesHead = 0
        }
        if zeroCopyHeldHead == zeroCopyHeld.count {
            zeroCopyHeld.removeAll(keepingCapacity: true)
            zeroCopyHeldHead = 0
        }
    }
}
