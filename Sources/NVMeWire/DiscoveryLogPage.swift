import CNVMeTypes

/// One record of the discovery log page (LID 70h).
public struct DiscoveryLogEntry: Equatable, Sendable {
    public enum SubsystemType: UInt8, Sendable {
        case referral = 1
        case nvm = 2
        case currentDiscovery = 3
    }

    public var subsystemType: SubsystemType
    public var portID: UInt16
    /// "ipv4" or "ipv6" address family of `address`.
    public var isIPv6: Bool
    public var address: String
    public var serviceID: String
    public var subsystemNQN: String
    /// TREQ bit 2: the controller supports disabling SQ flow control.
    public var sqFlowControlDisableSupported: Bool

    public init(subsystemType: SubsystemType, portID: UInt16, isIPv6: Bool, address: String, serviceID: String,
                subsystemNQN: String, sqFlowControlDisableSupported: Bool = true) {
        self.subsystemType = subsystemType
        self.portID = portID
        self.isIPv6 = isIPv6
        self.address = address
        self.serviceID = serviceID
        self.subsystemNQN = subsystemNQN
        self.sqFlowControlDisableSupported = sqFlowControlDisableSupported
    }

    public static let size = 1024

    func encode(into p: UnsafeMutableRawPointer) {
        p.put8(UInt8(NVMF_TRTYPE_TCP.rawValue), 0)
        p.put8(isIPv6 ? UInt8(NVMF_ADDR_FAMILY_IP6.rawValue) : UInt8(NVMF_ADDR_FAMILY_IP4.rawValue), 1)
        p.put8(subsystemType.rawValue, 2)
        p.put8(sqFlowControlDisableSupported ? 0x4 : 0, 3)
        p.put16(portID, 4)
        p.put16(0xFFFF, 6)  // dynamic controller model: any controller
        p.put16(32, 8)      // admin max SQ size
        p.putASCII(serviceID, 32, width: Int(NVMF_TRSVCID_SIZE), pad: 0)
        p.putASCII(subsystemNQN, 256, width: NQN.fieldWidth, pad: 0)
        p.putASCII(address, 512, width: Int(NVMF_TRADDR_SIZE.rawValue), pad: 0)
    }

    public init(decoding p: UnsafeRawPointer) {
        subsystemType = SubsystemType(rawValue: p.le8(2)) ?? .nvm
        isIPv6 = p.le8(1) == UInt8(NVMF_ADDR_FAMILY_IP6.rawValue)
        sqFlowControlDisableSupported = p.le8(3) & 0x4 != 0
        portID = p.le16(4)
        serviceID = p.ascii(32, width: Int(NVMF_TRSVCID_SIZE))
        subsystemNQN = p.ascii(256, width: NQN.fieldWidth)
        address = p.ascii(512, width: Int(NVMF_TRADDR_SIZE.rawValue))
    }
}

/// The whole discovery log page: a 1024-byte header (generation counter, record count,
/// format) followed by the records.
public enum DiscoveryLog {
    public static let headerSize = 1024

    public static func encode(generation: UInt64, entries: [DiscoveryLogEntry]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: headerSize + entries.count * DiscoveryLogEntry.size)
        out.withUnsafeMutableBytes { buf in
            let p = buf.baseAddress!
            p.put64(generation, 0)
            p.put64(UInt64(entries.count), 8)
            p.put16(0, 16)
            for (i, e) in entries.enumerated() { e.encode(into: p + headerSize + i * DiscoveryLogEntry.size) }
        }
        return out
    }

    /// Decodes a page read in full (tests and the Swift initiator use this).
    public static func decode(_ bytes: [UInt8]) -> (generation: UInt64, entries: [DiscoveryLogEntry])? {
        guard bytes.count >= headerSize else { return nil }
        return bytes.withUnsafeBytes { buf in
            let p = buf.baseAddress!
            let count = Int(min(p.le64(8), UInt64((bytes.count - headerSize) / DiscoveryLogEntry.size)))
            let entries = (0..<count).map { DiscoveryLogEntry(decoding: p + headerSize + $0 * DiscoveryLogEntry.size) }
            return (p.le64(0), entries)
        }
    }
}
