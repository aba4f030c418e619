/// A 64-byte NVMe submission queue entry, decoded once into plain fields.
///
/// Fabrics commands (opcode 0x7F) reuse the same layout: FCTYPE sits in byte 4 (the NSID
/// field), and their specific fields are the CDW10..CDW15 dwords read through accessors.
public struct SubmissionQueueEntry: Equatable, Sendable {
    public static let size = 64

    public var opcode: UInt8
    /// FUSE (bits 1:0) and PSDT (bits 7:6).
    public var flags: UInt8
    public var commandID: UInt16
    public var nsid: UInt32
    public var cdw2: UInt32
    public var cdw3: UInt32
    public var metadataPointer: UInt64
    public var sgl: SGLDescriptor
    public var cdw10: UInt32
    public var cdw11: UInt32
    public var cdw12: UInt32
    public var cdw13: UInt32
    public var cdw14: UInt32
    public var cdw15: UInt32

    public init(opcode: UInt8, commandID: UInt16, nsid: UInt32 = 0, flags: UInt8 = 0x40, sgl: SGLDescriptor = .null,
                cdw10: UInt32 = 0, cdw11: UInt32 = 0, cdw12: UInt32 = 0, cdw13: UInt32 = 0, cdw14: UInt32 = 0, cdw15: UInt32 = 0) {
        self.opcode = opcode
        self.flags = flags
        self.commandID = commandID
        self.nsid = nsid
        cdw2 = 0
        cdw3 = 0
        metadataPointer = 0
        self.sgl = sgl
        self.cdw10 = cdw10
        self.cdw11 = cdw11
        self.cdw12 = cdw12
        self.cdw13 = cdw13
        self.cdw14 = cdw14
        self.cdw15 = cdw15
    }

    @inline(__always)
    public init(decoding p: UnsafeRawPointer) {
        opcode = p.le8(0)
        flags = p.le8(1)
        commandID = p.le16(2)
        nsid = p.le32(4)
        cdw2 = p.le32(8)
        cdw3 = p.le32(12)
        metadataPointer = p.le64(16)
        sgl = SGLDescriptor(decoding: p + 24)
        cdw10 = p.le32(40)
        cdw11 = p.le32(44)
        cdw12 = p.le32(48)
        cdw13 = p.le32(52)
        cdw14 = p.le32(56)
        cdw15 = p.le32(60)
    }

    public func encode(into p: UnsafeMutableRawPointer) {
        p.put8(opcode, 0)
        p.put8(flags, 1)
        p.put16(commandID, 2)
        p.put32(nsid, 4)
        p.put32(cdw2, 8)
        p.put32(cdw3, 12)
        p.put64(metadataPointer, 16)
        sgl.encode(into: p + 24)
        p.put32(cdw10, 40)
        p.put32(cdw11, 44)
        p.put32(cdw12, 48)
        p.put32(cdw13, 52)
        p.put32(cdw14, 56)
        p.put32(cdw15, 60)
    }

    /// Fused operation bits (0 = normal).
    public var fuse: UInt8 { flags & 0x3 }
    /// PRP or SGL data transfer (fabrics require SGL: 01b or 10b).
    public var psdt: UInt8 { flags >> 6 }

    // MARK: Fabrics view

    public var fabricsCommandType: UInt8 { UInt8(truncatingIfNeeded: nsid) }
    public var connectRecordFormat: UInt16 { UInt16(truncatingIfNeeded: cdw10) }
    public var connectQueueID: UInt16 { UInt16(truncatingIfNeeded: cdw10 >> 16) }
    /// Zero-based submission queue size.
    public var connectSQSize: UInt16 { UInt16(truncatingIfNeeded: cdw11) }
    public var connectAttributes: UInt8 { UInt8(truncatingIfNeeded: cdw11 >> 16) }
    public var connectKeepAliveTimeout: UInt32 { cdw12 }
    /// Property Get/Set: ATTRIB bits 2:0, 0 = 4 bytes, 1 = 8 bytes.
    public var propertySize: Int { cdw10 & 0x7 == 1 ? 8 : 4 }
    public var propertyOffset: UInt32 { cdw11 }
    public var propertyValue: UInt64 { UInt64(cdw12) | UInt64(cdw13) << 32 }

    // MARK: NVM view

    public var startingLBA: UInt64 { UInt64(cdw10) | UInt64(cdw11) << 32 }
    /// Zero-based number of logical blocks.
    public var blockCountMinusOne: UInt16 { UInt16(truncatingIfNeeded: cdw12) }
    public var forceUnitAccess: Bool { cdw12 & (1 << 30) != 0 }
}

/// The 16-byte completion queue entry.
public struct CompletionQueueEntry: Equatable, Sendable {
    public static let size = 16
    public var dw0: UInt32
    public var dw1: UInt32
    public var sqHead: UInt16
    public var sqID: UInt16
    public var commandID: UInt16
    public var status: NVMeStatus

    public init(commandID: UInt16, status: NVMeStatus, dw0: UInt32 = 0, dw1: UInt32 = 0, sqHead: UInt16 = 0, sqID: UInt16 = 0) {
        self.dw0 = dw0
        self.dw1 = dw1
        self.sqHead = sqHead
        self.sqID = sqID
        self.commandID = commandID
        self.status = status
    }

    @inline(__always)
    public func encode(into p: UnsafeMutableRawPointer) {
        p.put32(dw0, 0)
        p.put32(dw1, 4)
        p.put16(sqHead, 8)
        p.put16(sqID, 10)
        p.put16(commandID, 12)
        p.put16(status.rawValue << 1, 14)
    }

    public init(decoding p: UnsafeRawPointer) {
        dw0 = p.le32(0)
        dw1 = p.le32(4)
        sqHead = p.le16(8)
        sqID = p.le16(10)
        commandID = p.le16(12)
        status = NVMeStatus(rawValue: p.le16(14) >> 1)
    }

    /// DW0/DW1 as one 64-bit result (Property Get of 8-byte properties).
    public var result64: UInt64 { UInt64(dw0) | UInt64(dw1) << 32 }
}
