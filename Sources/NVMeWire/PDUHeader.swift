/// NVMe/TCP PDU types (NVMe/TCP Transport Specification, "PDU Type").
public enum PDUType: UInt8, Sendable {
    case icReq = 0x00
    case icResp = 0x01
    case h2cTermReq = 0x02
    case c2hTermReq = 0x03
    case capsuleCommand = 0x04
    case capsuleResponse = 0x05
    case h2cData = 0x06
    case c2hData = 0x07
    case r2t = 0x09

    /// The only header length the specification allows for the type; a host that sends
    /// anything else has sent a malformed PDU.
    public var headerLength: Int {
        switch self {
        case .icReq, .icResp: return 128
        case .capsuleCommand: return 72
        case .h2cTermReq, .c2hTermReq, .capsuleResponse, .h2cData, .c2hData, .r2t: return 24
        }
    }
}

/// Common-header flag bits.
public enum PDUFlags {
    public static let headerDigest: UInt8 = 0x01
    public static let dataDigest: UInt8 = 0x02
    /// H2CData / C2HData: last PDU of the transfer.
    public static let lastPDU: UInt8 = 0x04
    /// C2HData: the command completed successfully, no CapsuleResp follows. Allowed only
    /// when the host disabled SQ flow control at Connect.
    public static let success: UInt8 = 0x08
}

/// The 8-byte common header every PDU starts with.
public struct PDUHeader: Equatable, Sendable {
    public static let size = 8
    public var rawType: UInt8
    public var flags: UInt8
    public var headerLength: UInt8
    public var dataOffset: UInt8
    public var length: UInt32

    public init(type: PDUType, flags: UInt8 = 0, headerLength: Int? = nil, dataOffset: Int = 0, length: Int) {
        rawType = type.rawValue
        self.flags = flags
        self.headerLength = UInt8(headerLength ?? type.headerLength)
        self.dataOffset = UInt8(dataOffset)
        self.length = UInt32(length)
    }

    @inline(__always)
    public init(decoding p: UnsafeRawPointer) {
        rawType = p.le8(0)
        flags = p.le8(1)
        headerLength = p.le8(2)
        dataOffset = p.le8(3)
        length = p.le32(4)
    }

    public var type: PDUType? { PDUType(rawValue: rawType) }

    @inline(__always)
    public func encode(into p: UnsafeMutableRawPointer) {
        p.put8(rawType, 0)
        p.put8(flags, 1)
        p.put8(headerLength, 2)
        p.put8(dataOffset, 3)
        p.put32(length, 4)
    }
}

/// Fatal error status codes carried by H2CTermReq / C2HTermReq.
public enum TransportError: UInt16, Sendable, Error {
    case invalidHeaderField = 0x01
    case pduSequenceError = 0x02
    case headerDigestError = 0x03
    case dataTransferOutOfRange = 0x04
    case dataTransferLimitExceeded = 0x05
    case unsupportedParameter = 0x06
}

/// A fatal transport condition found while decoding: what to put in the C2HTermReq.
public struct TransportFault: Error, Equatable, Sendable, CustomStringConvertible {
    public var status: TransportError
    /// For invalid header fields: the byte offset of the offending field in the header.
    public var fieldOffset: UInt32
    public var reason: String

    public init(_ status: TransportError, field: Int = 0, _ reason: String) {
        self.status = status
        self.fieldOffset = UInt32(field)
        self.reason = reason
    }

    public var description: String { "\(status) (offset \(fieldOffset)): \(reason)" }
}
