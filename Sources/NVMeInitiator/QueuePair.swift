import NVMeWire

/// One NVMe/TCP connection of the Swift host: ICReq, capsules, R2T-driven writes and C2H
/// reads, with header/data digests. Commands may be pipelined (`submit` several, then
/// `wait` for each); the target may complete them in any order.
public final class QueuePair {
    public let socket: TCPSocket
    public let digests: DigestConfig
    public let maxH2CData: Int
    public let queueID: UInt16
    /// In-capsule data the target accepts on this queue (8 KiB on admin queues).
    public var inCapsuleLimit: Int
    private var nextCID: UInt16 = 1
    private var pending: [UInt16: Pending] = [:]
    private var finished: [UInt16: Response] = [:]

    struct Pending {
        var writeData: [UInt8]
        var readData: [UInt8]
        var readLength: Int
    }

    public struct Response {
        public var cqe: CompletionQueueEntry
        public var data: [UInt8]
        /// The last C2HData carried SUCCESS and no CapsuleResp came (SQ flow control off).
        public var completedByC2HSuccess = false
        public var status: NVMeStatus { cqe.status }
    }

    public init(host: String, port: UInt16, queueID: UInt16, headerDigest: Bool = false, dataDigest: Bool = false,
                inCapsuleLimit: Int = 8192, timeoutSeconds: Int = 10) throws {
        socket = try TCPSocket(host: host, port: port, timeoutSeconds: timeoutSeconds)
        self.queueID = queueID
        self.inCapsuleLimit = inCapsuleLimit
        var req = [UInt8](repeating: 0, count: 128)
        req.withUnsafeMutableBytes { ICRequest(headerDigest: headerDigest, dataDigest: dataDigest, maxR2T: 0).encode(into: $0.baseAddress!) }
        try socket.send(req)
        let respBytes = try socket.receive(128)
        let resp = try respBytes.withUnsafeBytes { buf -> ICResponse in
            let ch = PDUHeader(decoding: buf.baseAddress!)
            if ch.type == .c2hTermReq { throw InitiatorError.terminated(status: buf.baseAddress!.le16(8), information: buf.baseAddress!.le32(10)) }
            do { return try ICResponse.decode(buf.baseAddress!) } catch { throw InitiatorError.protocolError("\(error)") }
        }
        guard resp.headerDigest == headerDigest, resp.dataDigest == dataDigest else {
            throw InitiatorError.protocolError("digest negotiation: asked H\(headerDigest) D\(dataDigest), got H\(resp.headerDigest) D\(resp.dataDigest)")
        }
        guard resp.controllerPDUDataAlignment == 0, resp.maxH2CData >= 4096, resp.maxH2CData % 4 == 0 else {
            throw InitiatorError.protocolError("ICResp CPDA \(resp.controllerPDUDataAlignment) MAXH2CDATA \(resp.maxH2CData)")
        }
        digests = DigestConfig(header: headerDigest, data: dataDigest)
        maxH2CData = Int(resp.maxH2CData)
    }

    /// Sends a command. Write data goes in-capsule when it fits, otherwise after the
    /// target's R2T. Returns the command ID to `wait` on.
    @discardableResult
    public func submit(_ sqe: SubmissionQueueEntry, write: [UInt8] = [], readLength: Int = 0, forceR2T: Bool = false) throws -> UInt16 {
        var sqe = sqe
        let cid = sqe.commandID != 0 ? sqe.commandID : allocateCID()
        sqe.commandID = cid
        let inCapsule = !write.isEmpty && write.count <= inCapsuleLimit && !forceR2T
        if !write.isEmpty {
            sqe.sgl = inCapsule ? .inCapsule(length: write.count) : .transport(length: write.count)
        } else if readLength > 0 {
            sqe.sgl = .transport(length: readLength)
        }
        pending[cid] = Pending(writeData: write, readData: [], readLength: readLength)
        try sendCapsule(sqe, data: inCapsule ? write : [])
        return cid
    }

    /// Sends a capsule as is (tests use this to send malformed SQEs).
    public func sendCapsule(_ sqe: SubmissionQueueEntry, data: [UInt8]) throws {
        try socket.send(capsulePDU(sqe, data: data))
    }

    /// The bytes of a capsule command PDU for this queue's digests, with in-capsule `data`
    /// (tests concatenate several into one send).
    public func capsulePDU(_ sqe: SubmissionQueueEntry, data: [UInt8]) -> [UInt8] {
        let hd = digests.headerDigestLength
        let plen = digests.pduLength(headerLength: 72, dataLength: data.count)
        var pdu = [UInt8](repeating: 0, count: plen)
        pdu.withUnsafeMutableBytes { buf in
            let p = buf.baseAddress!
            PDUHeader(type: .capsuleCommand, flags: data.isEmpty ? (digests.header ? PDUFlags.headerDigest : 0) : digests.flags,
                      dataOffset: data.isEmpty ? 0 : 72 + hd, length: plen).encode(into: p)
            sqe.encode(into: p + 8)
            if digests.header { p.put32(CRC32C.checksum(p, 72), 72) }
            if !data.isEmpty {
                data.withUnsafeBytes { (p + 72 + hd).copyMemory(from: $0.baseAddress!, byteCount: data.count) }
                if digests.data { p.put32(CRC32C.checksum(p + 72 + hd, data.count), 72 + hd + data.count) }
            }
        }
        return pdu
    }

    /// Waits for command `cid`, serving R2Ts and collecting C2HData for any command meanwhile.
    public func wait(_ cid: UInt16) throws -> Response {
        while finished[cid] == nil { try receivePDU() }
        return finished.removeValue(forKey: cid)!
    }

    /// True once command `cid` has completed (without consuming the completion).
    public func hasCompleted(_ cid: UInt16) -> Bool { finished[cid] != nil }

    public func execute(_ sqe: SubmissionQueueEntry, write: [UInt8] = [], readLength: Int = 0, forceR2T: Bool = false) throws -> Response {
        try wait(submit(sqe, write: write, readLength: readLength, forceR2T: forceR2T))
    }

    private func allocateCID() -> UInt16 {
        repeat { nextCID = nextCID == 0xFFFE ? 1 : nextCID + 1 } while pending[nextCID] != nil || finished[nextCID] != nil
        return nextCID
    }

    /// Reads and handles one PDU from the target.
    public func receivePDU() throws {
        let common = try socket.receive(8)
        let ch = common.withUnsafeBytes { PDUHeader(decoding: $0.baseAddress!) }
        guard ch.length >= 8, ch.length <= 16 * 1024 * 1024 else { throw InitiatorError.protocolError("plen \(ch.length)") }
        let rest = try socket.receive(Int(ch.length) - 8)
        let pdu = common + rest
        try pdu.withUnsafeBytes { buf in
            let p = buf.baseAddress!
            switch ch.type {
            case .c2hTermReq?:
                throw InitiatorError.terminated(status: p.le16(8), information: p.le32(10))
            case .capsuleResponse?:
                try checkHeaderDigest(p, hlen: 24, flags: ch.flags)
                let cqe = CompletionQueueEntry(decoding: p + 8)
                guard let entry = pending.removeValue(forKey: cqe.commandID) else {
                    throw InitiatorError.protocolError("response for unknown command \(cqe.commandID)")
                }
                finished[cqe.commandID] = Response(cqe: cqe, data: entry.readData)
            case .c2hData?:
                try checkHeaderDigest(p, hlen: 24, flags: ch.flags)
                let h = DataTransferHeader(decoding: p)
                guard var entry = pending[h.commandID] else { throw InitiatorError.protocolError("C2HData for unknown command \(h.commandID)") }
                let start = Int(ch.dataOffset)
                let len = Int(h.length)
                guard start + len + digests.dataDigestLength == pdu.count else { throw InitiatorError.protocolError("C2HData lengths") }
                guard Int(h.offset) == entry.readData.count, Int(h.offset) + len <= entry.readLength else {
                    throw InitiatorError.protocolError("C2HData offset \(h.offset) len \(len)")
                }
                if digests.data {
                    guard p.le32(start + len) == CRC32C.checksum(p + start, len) else { throw InitiatorError.protocolError("C2HData data digest") }
                }
                entry.readData += pdu[start..<(start + len)]
                if ch.flags & PDUFlags.success != 0 {
                    pending[h.commandID] = nil
                    finished[h.commandID] = Response(cqe: CompletionQueueEntry(commandID: h.commandID, status: .success), data: entry.readData,
                                                     completedByC2HSuccess: true)
                } else {
                    pending[h.commandID] = entry
                }
            case .r2t?:
                try checkHeaderDigest(p, hlen: 24, flags: ch.flags)
                let h = DataTransferHeader(decoding: p)
                guard let entry = pending[h.commandID] else { throw InitiatorError.protocolError("R2T for unknown command \(h.commandID)") }
                guard Int(h.offset) + Int(h.length) <= entry.writeData.count else { throw InitiatorError.protocolError("R2T beyond the data") }
                try sendH2CData(cid: h.commandID, tag: h.transferTag, data: entry.writeData, offset: Int(h.offset), length: Int(h.length))
            default:
                throw InitiatorError.protocolError("unexpected PDU type \(ch.rawType)")
            }
        }
    }

    private func checkHeaderDigest(_ p: UnsafeRawPointer, hlen: Int, flags: UInt8) throws {
        guard digests.header else { return }
        guard flags & PDUFlags.headerDigest != 0, p.le32(hlen) == CRC32C.checksum(p, hlen) else {
            throw InitiatorError.protocolError("header digest")
        }
    }

    /// Sends `length` bytes from `offset` as H2CData PDUs of at most MAXH2CDATA.
    public func sendH2CData(cid: UInt16, tag: UInt16, data: [UInt8], offset: Int, length: Int, chunk: Int? = nil) throws {
        let chunk = chunk ?? maxH2CData
        var at = offset
        let end = offset + length
        while at < end {
            let n = min(chunk, end - at)
            try sendRawH2CData(cid: cid, tag: tag, offset: at, bytes: Array(data[at..<(at + n)]), last: at + n == end)
            at += n
        }
    }

    public func sendRawH2CData(cid: UInt16, tag: UInt16, offset: Int, bytes: [UInt8], last: Bool, corruptDigest: Bool = false) throws {
        let hd = digests.headerDigestLength
        let plen = digests.pduLength(headerLength: 24, dataLength: bytes.count)
        var pdu = [UInt8](repeating: 0, count: plen)
        pdu.withUnsafeMutableBytes { buf in
            let p = buf.baseAddress!
            DataTransferHeader(commandID: cid, transferTag: tag, offset: UInt32(offset), length: UInt32(bytes.count))
                .encode(type: .h2cData, flags: digests.flags | (last ? PDUFlags.lastPDU : 0), dataOffset: 24 + hd, pduLength: plen, into: p)
            if digests.header { p.put32(CRC32C.checksum(p, 24), 24) }
            bytes.withUnsafeBytes { (p + 24 + hd).copyMemory(from: $0.baseAddress!, byteCount: bytes.count) }
            if digests.data { p.put32(CRC32C.checksum(p + 24 + hd, bytes.count) ^ (corruptDigest ? 1 : 0), 24 + hd + bytes.count) }
        }
        try socket.send(pdu)
    }
}
