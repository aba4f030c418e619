import NVMeWire

/// Reservation commands as a host sends them (nvme-cli's resv-register/-acquire/-release/-report).
extension HostController {
    private func keys(_ a: UInt64, _ b: UInt64) -> [UInt8] {
        var d = [UInt8](repeating: 0, count: 16)
        d.withUnsafeMutableBytes { $0.baseAddress!.put64(a, 0); $0.baseAddress!.put64(b, 8) }
        return d
    }

    /// RREGA 0 register, 1 unregister, 2 replace; CPTPL 2 clears and 3 sets Persist Through Power Loss.
    public func reservationRegister(nsid: UInt32 = 1, action: UInt32, currentKey: UInt64 = 0, newKey: UInt64 = 0,
                                    ignoreKey: Bool = false, changePTPL: UInt32 = 0, queue: Int = 0) throws -> NVMeStatus {
        try ioQueues[queue].execute(SubmissionQueueEntry(opcode: 0x0D, commandID: 0, nsid: nsid,
                                                         cdw10: action | (ignoreKey ? 8 : 0) | changePTPL << 30),
                                    write: keys(currentKey, newKey)).status
    }

    /// RACQA 0 acquire, 1 preempt, 2 preempt and abort.
    public func reservationAcquire(nsid: UInt32 = 1, action: UInt32, type: UInt8, currentKey: UInt64, preemptKey: UInt64 = 0,
                                   queue: Int = 0) throws -> NVMeStatus {
        try ioQueues[queue].execute(SubmissionQueueEntry(opcode: 0x11, commandID: 0, nsid: nsid, cdw10: action | UInt32(type) << 8),
                                    write: keys(currentKey, preemptKey)).status
    }

    /// RRELA 0 release, 1 clear.
    public func reservationRelease(nsid: UInt32 = 1, action: UInt32, type: UInt8, currentKey: UInt64, queue: Int = 0) throws -> NVMeStatus {
        try ioQueues[queue].execute(SubmissionQueueEntry(opcode: 0x15, commandID: 0, nsid: nsid, cdw10: action | UInt32(type) << 8),
                                    write: Array(keys(currentKey, 0)[0..<8])).status
    }

    /// The Reservation Status data structure (extended form when `extended`).
    public func reservationReport(nsid: UInt32 = 1, extended: Bool = true, length: Int = 4096, queue: Int = 0) throws -> QueuePair.Response {
        try ioQueues[queue].execute(SubmissionQueueEntry(opcode: 0x0E, commandID: 0, nsid: nsid, cdw10: UInt32(length / 4 - 1),
                                                         cdw11: extended ? 1 : 0), readLength: length)
    }
}
