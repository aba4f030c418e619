import CNVMeTypes
import NVMeWire

/// A controller as the Swift host sees it: the admin queue plus any I/O queues, brought up
/// the way the Linux host does (Connect, Property Get CAP, Set CC.EN, poll CSTS.RDY,
/// Identify, Set Features Number of Queues, I/O Connects).
public final class HostController {
    public let host: String
    public let port: UInt16
    public let subsystemNQN: String
    public let hostNQN: String
    public let hostID: [UInt8]
    public let admin: QueuePair
    public private(set) var ioQueues: [QueuePair] = []
    public private(set) var controllerID: UInt16 = 0
    let headerDigest: Bool
    let dataDigest: Bool

    public static let defaultHostNQN = "nqn.2014-08.org.nvmexpress:uuid:6d2e1c70-3f4b-4e25-9a3d-0d1c2b3a4f50"

    /// Opens the admin queue and sends Connect. Throws `commandFailed` if Connect is refused
    /// (the status is in `connectStatus` of the error text) — use `tryConnect` to inspect it.
    public init(host: String, port: UInt16, subsystemNQN: String, hostNQN: String = HostController.defaultHostNQN,
                keepAliveMs: UInt32 = 5000, adminQueueSize: Int = 32, headerDigest: Bool = false, dataDigest: Bool = false) throws {
        self.host = host
        self.port = port
        self.subsystemNQN = subsystemNQN
        self.hostNQN = hostNQN
        self.hostID = Array(hostNQN.utf8.suffix(16)) + [UInt8](repeating: 0, count: max(0, 16 - hostNQN.utf8.count))
        self.headerDigest = headerDigest
        self.dataDigest = dataDigest
        admin = try QueuePair(host: host, port: port, queueID: 0, headerDigest: headerDigest, dataDigest: dataDigest)
        let r = try admin.execute(Self.connectCommand(queueID: 0, sqsize: adminQueueSize, keepAliveMs: keepAliveMs),
                                  write: connectData(controllerID: 0xFFFF))
        guard r.status.isSuccess else { throw HostError.connectRefused(r.status, dw0: r.cqe.dw0) }
        controllerID = UInt16(truncatingIfNeeded: r.cqe.dw0)
    }

    static func connectCommand(queueID: UInt16, sqsize: Int, keepAliveMs: UInt32, attributes: UInt8 = 0) -> SubmissionQueueEntry {
        SubmissionQueueEntry(opcode: 0x7F, commandID: 0, nsid: UInt32(nvme_fabrics_type_connect.rawValue),
                             cdw10: UInt32(queueID) << 16, cdw11: UInt32(sqsize - 1) | UInt32(attributes) << 16, cdw12: keepAliveMs)
    }

    public func connectData(controllerID: UInt16) -> [UInt8] {
        var d = [UInt8](repeating: 0, count: 1024)
        d.withUnsafeMutableBytes { buf in
            let p = buf.baseAddress!
            hostID.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: 16) }
            p.put16(controllerID, 16)
            p.putASCII(subsystemNQN, 256, width: 256, pad: 0)
            p.putASCII(hostNQN, 512, width: 256, pad: 0)
        }
        return d
    }

    // MARK: Properties and enable

    public func propertyGet(_ offset: UInt32, eightBytes: Bool = false) throws -> UInt64 {
        let r = try admin.execute(SubmissionQueueEntry(opcode: 0x7F, commandID: 0, nsid: UInt32(nvme_fabrics_type_property_get.rawValue),
                                                       cdw10: eightBytes ? 1 : 0, cdw11: offset))
        try check(r, "Property Get 0x\(String(offset, radix: 16))")
        return r.cqe.result64
    }

    public func propertySet(_ offset: UInt32, _ value: UInt32) throws {
        let r = try admin.execute(SubmissionQueueEntry(opcode: 0x7F, commandID: 0, nsid: UInt32(nvme_fabrics_type_property_set.rawValue),
                                                       cdw10: 0, cdw11: offset, cdw12: value))
        try check(r, "Property Set 0x\(String(offset, radix: 16))")
    }

    /// CC.EN=1 with 64-byte SQEs and 16-byte CQEs, then waits for CSTS.RDY.
    public func enable() throws {
        _ = try propertyGet(0x00, eightBytes: true)
        try propertySet(0x14, 1 | 6 << 16 | 4 << 20)
        for _ in 0..<100 {
            if try propertyGet(0x1C) & 1 == 1 { return }
        }
        throw HostError.notReady
    }

    // MARK: Admin commands

    public func identify(cns: UInt8, nsid: UInt32 = 0) throws -> [UInt8] {
        let r = try admin.execute(SubmissionQueueEntry(opcode: UInt8(nvme_admin_identify.rawValue), commandID: 0, nsid: nsid, cdw10: UInt32(cns)),
                                  readLength: 4096)
        try check(r, "Identify CNS \(cns)")
        return r.data
    }

    public func getLogPage(_ lid: UInt8, length: Int, offset: UInt64 = 0, nsid: UInt32 = 0xFFFF_FFFF) throws -> [UInt8] {
        let numd = UInt32(length / 4 - 1)
        let r = try admin.execute(SubmissionQueueEntry(opcode: UInt8(nvme_admin_get_log_page.rawValue), commandID: 0, nsid: nsid,
                                                       cdw10: UInt32(lid) | (numd & 0xFFFF) << 16, cdw11: numd >> 16,
                                                       cdw12: UInt32(truncatingIfNeeded: offset), cdw13: UInt32(truncatingIfNeeded: offset >> 32)),
                                  readLength: length)
        try check(r, "Get Log Page 0x\(String(lid, radix: 16))")
        return r.data
    }

    public func setFeature(_ fid: UInt8, _ value: UInt32) throws -> QueuePair.Response {
        try admin.execute(SubmissionQueueEntry(opcode: UInt8(nvme_admin_set_features.rawValue), commandID: 0, cdw10: UInt32(fid), cdw11: value))
    }

    public func getFeature(_ fid: UInt8, select: UInt32 = 0) throws -> QueuePair.Response {
        try admin.execute(SubmissionQueueEntry(opcode: UInt8(nvme_admin_get_features.rawValue), commandID: 0, cdw10: UInt32(fid) | select << 8))
    }

    public func keepAlive() throws {
        try check(try admin.execute(SubmissionQueueEntry(opcode: UInt8(nvme_admin_keep_alive.rawValue), commandID: 0)), "Keep Alive")
    }

    /// Reads the whole discovery log the way nvme-cli does: header first, then everything.
    public func discoveryLog() throws -> (generation: UInt64, entries: [DiscoveryLogEntry]) {
        let header = try getLogPage(0x70, length: 1024, nsid: 0)
        let count = header.withUnsafeBytes { $0.baseAddress!.le64(8) }
        let full = try getLogPage(0x70, length: 1024 + Int(count) * 1024, nsid: 0)
        guard let log = DiscoveryLog.decode(full) else { throw HostError.malformed("discovery log") }
        return log
    }

    // MARK: I/O queues

    /// Asks for `count` I/O queues and connects each on its own TCP connection.
    public func createIOQueues(_ count: Int, queueSize: Int = 128, inCapsuleLimit: Int = 16384, attributes: UInt8 = 0) throws {
        let r = try setFeature(UInt8(NVME_FEAT_FID_NUM_QUEUES.rawValue), UInt32(count - 1) | UInt32(count - 1) << 16)
        try check(r, "Set Features Number of Queues")
        let granted = Int(r.cqe.dw0 & 0xFFFF) + 1
        for qid in 1...min(count, granted) {
            let q = try QueuePair(host: host, port: port, queueID: UInt16(qid), headerDigest: headerDigest, dataDigest: dataDigest,
                                  inCapsuleLimit: inCapsuleLimit)
            let c = try q.execute(Self.connectCommand(queueID: UInt16(qid), sqsize: queueSize, keepAliveMs: 0, attributes: attributes),
                                  write: connectData(controllerID: controllerID))
            guard c.status.isSuccess else { throw HostError.connectRefused(c.status, dw0: c.cqe.dw0) }
            ioQueues.append(q)
        }
    }

    public static func readCommand(nsid: UInt32, lba: UInt64, blocks: Int) -> SubmissionQueueEntry {
        SubmissionQueueEntry(opcode: UInt8(nvme_cmd_read.rawValue), commandID: 0, nsid: nsid,
                             cdw10: UInt32(truncatingIfNeeded: lba), cdw11: UInt32(truncatingIfNeeded: lba >> 32), cdw12: UInt32(blocks - 1))
    }

    public static func writeCommand(nsid: UInt32, lba: UInt64, blocks: Int, fua: Bool = false) -> SubmissionQueueEntry {
        SubmissionQueueEntry(opcode: UInt8(nvme_cmd_write.rawValue), commandID: 0, nsid: nsid,
                             cdw10: UInt32(truncatingIfNeeded: lba), cdw11: UInt32(truncatingIfNeeded: lba >> 32),
                             cdw12: UInt32(blocks - 1) | (fua ? 1 << 30 : 0))
    }

    public func read(queue: Int = 0, nsid: UInt32 = 1, lba: UInt64, blocks: Int, blockSize: Int = 512) throws -> [UInt8] {
        let r = try ioQueues[queue].execute(Self.readCommand(nsid: nsid, lba: lba, blocks: blocks), readLength: blocks * blockSize)
        try check(r, "Read")
        return r.data
    }

    public func write(queue: Int = 0, nsid: UInt32 = 1, lba: UInt64, data: [UInt8], blockSize: Int = 512, fua: Bool = false) throws {
        let r = try ioQueues[queue].execute(Self.writeCommand(nsid: nsid, lba: lba, blocks: data.count / blockSize, fua: fua), write: data)
        try check(r, "Write")
    }

    public func flush(queue: Int = 0, nsid: UInt32 = 1) throws {
        try check(try ioQueues[queue].execute(SubmissionQueueEntry(opcode: UInt8(nvme_cmd_flush.rawValue), commandID: 0, nsid: nsid)), "Flush")
    }

    /// Shutdown as the Linux host does it: CC.SHN=01b, then poll CSTS.SHST.
    public func shutdown() throws {
        try propertySet(0x14, 1 | 6 << 16 | 4 << 20 | 1 << 14)
        for _ in 0..<100 where try propertyGet(0x1C) & 0xC == 0x8 { return }
        throw HostError.notReady
    }

    private func check(_ r: QueuePair.Response, _ what: String) throws {
        guard r.status.isSuccess else { throw HostError.failed(what, r.status) }
    }
}

public enum HostError: Error, Equatable, CustomStringConvertible {
    case connectRefused(NVMeStatus, dw0: UInt32)
    case failed(String, NVMeStatus)
    case notReady
    case malformed(String)

    public var description: String {
        switch self {
        case let .connectRefused(s, d): return "Connect refused: \(s) (dw0 0x\(String(d, radix: 16)))"
        case let .failed(what, s): return "\(what) failed: \(s)"
        case .notReady: return "controller did not become ready"
        case let .malformed(s): return "malformed \(s)"
        }
    }
}
