/// The header shared by H2CData, C2HData and R2T: command id, transfer tag, offset, length.
/// Bytes 8..23 of each of those PDUs.
public struct DataTransferHeader: Equatable, Sendable {
    public var commandID: UInt16
    public var transferTag: UInt16
    public var offset: UInt32
    public var length: UInt32

    public init(commandID: UInt16, transferTag: UInt16 = 0, offset: UInt32, length: UInt32) {
        self.commandID = commandID
        self.transferTag = transferTag
        self.offset = offset
        self.length = length
    }

    @inline(__always)
    public init(decoding p: UnsafeRawPointer) {
        commandID = p.le16(8)
        transferTag = p.le16(10)
        offset = p.le32(12)
        length = p.le32(16)
    }

    /// Writes a whole 24-byte header (common header included) of `type`.
    /// `pduLength` is the PDU's total length including any data and digests.
    @inline(__always)
    public func encode(type: PDUType, flags: UInt8, dataOffset: Int, pduLength: Int, into p: UnsafeMutableRawPointer) {
        PDUHeader(type: type, flags: flags, dataOffset: dataOffset, length: pduLength).encode(into: p)
        p.put16(commandID, 8)
        p.put16(transferTag, 10)
        p.put32(offset, 12)
        p.put32(length, 16)
        p.put32(0, 20)
    }
}

/// Digest arithmetic for a negotiated connection: where data starts and how long a PDU is.
public struct DigestConfig: Equatable, Sendable {
    public var header: Bool
    public var data: Bool

    public init(header: Bool, data: Bool) {
        self.header = header
        self.data = data
    }

    public var headerDigestLength: Int { header ? 4 : 0 }
    public var dataDigestLength: Int { data ? 4 : 0 }
    public var flags: UInt8 { (header ? PDUFlags.headerDigest : 0) | (data ? PDUFlags.dataDigest : 0) }

    /// Data offset of a PDU with a header of `hlen` bytes when the controller asks for no
    /// alignment (CPDA 0): the data follows the header and its digest.
    @inline(__always) public func dataOffset(headerLength hlen: Int) -> Int { hlen + headerDigestLength }

    /// Total PDU length for a header of `hlen` carrying `dataLength` bytes.
    @inline(__always) public func pduLength(headerLength hlen: Int, dataLength: Int) -> Int {
        hlen + headerDigestLength + (dataLength > 0 ? dataLength + dataDigestLength : 0)
    }
}
