/// The SGL descriptor in an SQE's DPTR (bytes 24..39).
///
/// NVMe/TCP uses exactly two shapes: a Data Block descriptor with the Offset subtype for
/// in-capsule data (identifier 0x01), and a Transport SGL Data Block with transport-specific
/// subtype A (0x5A) for data moved by R2T/H2CData or C2HData. Anything else is rejected.
public struct SGLDescriptor: Equatable, Sendable {
    public var address: UInt64
    public var length: UInt32
    /// Byte 15: descriptor type (bits 7:4) and subtype (bits 3:0).
    public var identifier: UInt8

    public static let inCapsuleIdentifier: UInt8 = 0x01
    public static let transportIdentifier: UInt8 = 0x5A
    public static let null = SGLDescriptor(address: 0, length: 0, identifier: transportIdentifier)

    public init(address: UInt64, length: UInt32, identifier: UInt8) {
        self.address = address
        self.length = length
        self.identifier = identifier
    }

    public static func inCapsule(offset: UInt64 = 0, length: Int) -> SGLDescriptor {
        SGLDescriptor(address: offset, length: UInt32(length), identifier: inCapsuleIdentifier)
    }

    public static func transport(length: Int) -> SGLDescriptor {
        SGLDescriptor(address: 0, length: UInt32(length), identifier: transportIdentifier)
    }

    @inline(__always)
    public init(decoding p: UnsafeRawPointer) {
        address = p.le64(0)
        length = p.le32(8)
        identifier = p.le8(15)
    }

    public func encode(into p: UnsafeMutableRawPointer) {
        p.put64(address, 0)
        p.put32(length, 8)
        p.put16(0, 12)
        p.put8(0, 14)
        p.put8(identifier, 15)
    }

    public var isInCapsule: Bool { identifier == Self.inCapsuleIdentifier }
    public var isTransport: Bool { identifier == Self.transportIdentifier }
}
