import NVMeWire

/// Range descriptors carried as command data: Dataset Management ranges (16 bytes: context
/// attributes, length in blocks, starting LBA) and Copy source ranges (format 0, 32 bytes:
/// starting LBA at 8, 0-based block count at 16). Read in place from the command buffer,
/// never copied into an array.
public struct LBARanges {
    public static let dsmEntrySize = 16
    public static let copyEntrySize = 32

    public let base: UnsafeRawPointer
    public let count: Int
    public let isCopy: Bool
    let blockSizeShift: UInt64

    public init(data: UnsafeRawPointer, count: Int, copy: Bool, namespace: Namespace) {
        base = data
        self.count = count
        isCopy = copy
        blockSizeShift = UInt64(namespace.blockSizeShift)
    }

    /// Range `i` in blocks.
    @inline(__always)
    public func blocks(_ i: Int) -> (lba: UInt64, count: UInt64) {
        if isCopy {
            let p = base + i * Self.copyEntrySize
            return (p.le64(8), UInt64(p.le16(16)) + 1)
        }
        let p = base + i * Self.dsmEntrySize
        return (p.le64(8), UInt64(p.le32(4)))
    }

    /// Range `i` in bytes.
    @inline(__always)
    public func bytes(_ i: Int) -> (offset: UInt64, length: UInt64) {
        let r = blocks(i)
        return (r.lba << blockSizeShift, r.count << blockSizeShift)
    }

    /// Checks every range against the namespace (and, for Copy, the copy limits and the
    /// destination). Returns the status to fail the command with, or nil.
    public func validate(namespace ns: Namespace, copyDestinationLBA: UInt64 = 0) -> NVMeStatus? {
        var total: UInt64 = 0
        for i in 0..<count {
            let r = blocks(i)
            guard r.lba <= ns.blockCount, r.count <= ns.blockCount - r.lba else { return .lbaOutOfRange }
            if isCopy && r.count > UInt64(IOCommand.maxSingleSourceRange) { return .commandSizeLimitExceeded }
            total += r.count
        }
        if isCopy {
            guard total <= UInt64(IOCommand.maxCopyLength) else { return .commandSizeLimitExceeded }
            guard copyDestinationLBA < ns.blockCount, total <= ns.blockCount - copyDestinationLBA else { return .lbaOutOfRange }
        }
        return nil
    }
}
