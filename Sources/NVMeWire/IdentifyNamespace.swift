import CNVMeTypes

/// What the target reports about one namespace in Identify Namespace (CNS 00h) and the
/// Namespace Identification Descriptor list (CNS 03h).
public struct NamespaceIdentity: Sendable {
    public var blockCount: UInt64
    /// Blocks actually allocated (sparse backing files report fewer than `blockCount`).
    public var blocksInUse: UInt64
    /// log2 of the logical block size (9 = 512 B, 12 = 4 KiB).
    public var blockSizeShift: UInt8
    public var nguid: [UInt8]
    public var uuid: [UInt8]
    public var writeProtected: Bool
    public var shared: Bool
    /// Preferred write granularity/alignment in blocks, from the backing store (0 = unknown).
    public var preferredWriteGranularity: UInt16
    /// DLFEAT: deallocated blocks read as zeros (and Write Zeroes may deallocate).
    public var deallocatedReadsZero = false
    /// RESCAP (0 = no reservations).
    public var reservationCapabilities: UInt8 = 0
    /// Copy limits: MSSRL (blocks), MCL (blocks), MSRC (0-based range count); nil = no Copy.
    public var copyLimits: (UInt16, UInt32, UInt8)? = nil
    /// ANA group (0: the controller does not report ANA).
    public var anaGroupID: UInt32 = 0
    /// IEEE EUI-64, when the operator configured one.
    public var eui64: [UInt8]? = nil

    public init(blockCount: UInt64, blocksInUse: UInt64, blockSizeShift: UInt8, nguid: [UInt8], uuid: [UInt8],
                writeProtected: Bool, shared: Bool, preferredWriteGranularity: UInt16 = 0) {
        self.blockCount = blockCount
        self.blocksInUse = blocksInUse
        self.blockSizeShift = blockSizeShift
        self.nguid = nguid
        self.uuid = uuid
        self.writeProtected = writeProtected
        self.shared = shared
        self.preferredWriteGranularity = preferredWriteGranularity
    }

    /// The 4096-byte Identify Namespace data structure.
    public func encode() -> [UInt8] {
        var ns = nvme_id_ns()
        ns.nsze = blockCount.littleEndian
        ns.ncap = blockCount.littleEndian
        ns.nuse = min(blocksInUse, blockCount).littleEndian
        // NSFEAT bit 0: thin provisioning (NUSE may be below NCAP); bit 4: NPWG/NOWS valid.
        ns.nsfeat = (blocksInUse < blockCount ? 0x1 : 0) | (preferredWriteGranularity > 0 ? 0x10 : 0)
        ns.nlbaf = 0
        ns.flbas = 0
        ns.nmic = shared ? 1 : 0
        ns.rescap = reservationCapabilities
        if preferredWriteGranularity > 0 {
            let g = (preferredWriteGranularity - 1).littleEndian
            ns.npwg = g
            ns.npwa = g
            ns.nows = g
        }
        ns.nsattr = writeProtected ? 1 : 0
        // DLFEAT bits 2:0 = 001b (deallocated blocks read as zeros), bit 3: Write Zeroes
        // with DEAC deallocates.
        ns.dlfeat = deallocatedReadsZero ? 0x09 : 0
        if let (mssrl, mcl, msrc) = copyLimits {
            ns.mssrl = mssrl.littleEndian
            ns.mcl = mcl.littleEndian
            ns.msrc = msrc
        }
        withUnsafeMutableBytes(of: &ns.nguid) { $0.copyBytes(from: nguid.prefix(16)) }
        if let eui64 { withUnsafeMutableBytes(of: &ns.eui64) { $0.copyBytes(from: eui64.prefix(8)) } }
        ns.anagrpid = anaGroupID.littleEndian
        ns.lbaf.0.ds = blockSizeShift
        return withUnsafeBytes(of: &ns) { Array($0) }
    }

    /// Namespace Identification Descriptor list: EUI-64 (if any), NGUID and UUID, 4096 bytes.
    public func encodeDescriptors() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 4096)
        var at = 0
        var ids = [(UInt8(NVME_NIDT_NGUID.rawValue), nguid), (UInt8(NVME_NIDT_UUID.rawValue), uuid)]
        if let eui64 { ids.insert((UInt8(NVME_NIDT_EUI64.rawValue), eui64), at: 0) }
        for (type, value) in ids {
            out[at] = type
            out[at + 1] = UInt8(value.count)
            out.replaceSubrange((at + 4)..<(at + 4 + value.count), with: value)
            at += 4 + value.count
        }
        return out
    }
}

/// Active namespace ID list (CNS 02h): up to 1024 NSIDs greater than `after`, ascending.
public func encodeActiveNamespaceList(_ nsids: [UInt32], after: UInt32) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: 4096)
    var i = 0
    for nsid in nsids.sorted() where nsid > after && i < 1024 {
        out.withUnsafeMutableBytes { $0.baseAddress!.put32(nsid, i * 4) }
        i += 1
    }
    return out
}
