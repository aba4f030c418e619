/// Initialize Connection Request: the first PDU of every NVMe/TCP connection.
public struct ICRequest: Equatable, Sendable {
    public var pduFormatVersion: UInt16
    public var hostPDUDataAlignment: UInt8
    public var headerDigest: Bool
    public var dataDigest: Bool
    public var maxR2T: UInt32

    public init(pduFormatVersion: UInt16 = 0, hostPDUDataAlignment: UInt8 = 0, headerDigest: Bool, dataDigest: Bool, maxR2T: UInt32 = 0) {
        self.pduFormatVersion = pduFormatVersion
        self.hostPDUDataAlignment = hostPDUDataAlignment
        self.headerDigest = headerDigest
        self.dataDigest = dataDigest
        self.maxR2T = maxR2T
    }

    /// Decodes the 128-byte ICReq (common header included) and applies the checks the
    /// specification makes fatal: length, PFV and HPDA range.
    public static func decode(_ p: UnsafeRawPointer) throws(TransportFault) -> ICRequest {
        let ch = PDUHeader(decoding: p)
        guard ch.headerLength == 128 else { throw TransportFault(.invalidHeaderField, field: 2, "ICReq hlen \(ch.headerLength)") }
        guard ch.length == 128 else { throw TransportFault(.invalidHeaderField, field: 4, "ICReq plen \(ch.length)") }
        let pfv = p.le16(8)
        guard pfv == 0 else { throw TransportFault(.invalidHeaderField, field: 8, "unsupported PDU format version \(pfv)") }
        let hpda = p.le8(10)
        guard hpda <= 31 else { throw TransportFault(.invalidHeaderField, field: 10, "HPDA \(hpda) > 31") }
        let dgst = p.le8(11)
        return ICRequest(pduFormatVersion: pfv, hostPDUDataAlignment: hpda,
                         headerDigest: dgst & 1 != 0, dataDigest: dgst & 2 != 0, maxR2T: p.le32(12))
    }

    public func encode(into p: UnsafeMutableRawPointer) {
        p.initializeMemory(as: UInt8.self, repeating: 0, count: 128)
        PDUHeader(type: .icReq, length: 128).encode(into: p)
        p.put16(pduFormatVersion, 8)
        p.put8(hostPDUDataAlignment, 10)
        p.put8((headerDigest ? 1 : 0) | (dataDigest ? 2 : 0), 11)
        p.put32(maxR2T, 12)
    }
}

/// Initialize Connection Response.
public struct ICResponse: Equatable, Sendable {
    public var pduFormatVersion: UInt16 = 0
    /// Controller PDU data alignment. The Linux host rejects anything but 0.
    public var controllerPDUDataAlignment: UInt8 = 0
    public var headerDigest: Bool
    public var dataDigest: Bool
    /// Largest H2CData payload the host may send in one PDU (multiple of 4, at least 4 KiB).
    public var maxH2CData: UInt32

    public init(headerDigest: Bool, dataDigest: Bool, maxH2CData: UInt32) {
        self.headerDigest = headerDigest
        self.dataDigest = dataDigest
        self.maxH2CData = maxH2CData
    }

    public func encode(into p: UnsafeMutableRawPointer) {
        p.initializeMemory(as: UInt8.self, repeating: 0, count: 128)
        PDUHeader(type: .icResp, length: 128).encode(into: p)
        p.put16(pduFormatVersion, 8)
        p.put8(controllerPDUDataAlignment, 10)
        p.put8((headerDigest ? 1 : 0) | (dataDigest ? 2 : 0), 11)
        p.put32(maxH2CData, 12)
    }

    public static func decode(_ p: UnsafeRawPointer) throws(TransportFault) -> ICResponse {
        let ch = PDUHeader(decoding: p)
        guard ch.type == .icResp, ch.headerLength == 128, ch.length == 128 else {
            throw TransportFault(.invalidHeaderField, field: 0, "malformed ICResp")
        }
        var r = ICResponse(headerDigest: p.le8(11) & 1 != 0, dataDigest: p.le8(11) & 2 != 0, maxH2CData: p.le32(12))
        r.pduFormatVersion = p.le16(8)
        r.controllerPDUDataAlignment = p.le8(10)
        return r
    }
}

/// H2CTermReq / C2HTermReq: a fatal error report, after which the sender closes.
public struct TerminationRequest: Equatable, Sendable {
    /// The offending PDU header copied into the request is capped so the whole PDU stays
    /// within the 152 bytes the specification allows.
    public static let maxErrorData = 128
    public var status: UInt16
    public var errorInformation: UInt32

    public init(status: UInt16, errorInformation: UInt32) {
        self.status = status
        self.errorInformation = errorInformation
    }

    /// Encodes header plus `errorData` (a copy of the offending header) and returns the total length.
    public func encode(type: PDUType, into p: UnsafeMutableRawPointer, errorData: UnsafeRawBufferPointer) -> Int {
        let extra = min(errorData.count, Self.maxErrorData)
        let total = 24 + extra
        p.initializeMemory(as: UInt8.self, repeating: 0, count: 24)
        PDUHeader(type: type, dataOffset: 0, length: total).encode(into: p)
        p.put16(status, 8)
        p.put32(errorInformation, 10)
        if extra > 0 { (p + 24).copyMemory(from: errorData.baseAddress!, byteCount: extra) }
        return total
    }

    public static func decode(_ p: UnsafeRawPointer) -> TerminationRequest {
        TerminationRequest(status: p.le16(8), errorInformation: p.le32(10))
    }
}
