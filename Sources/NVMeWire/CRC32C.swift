import CISAL

/// CRC32C (Castagnoli) as NVMe/TCP header and data digests use it: seed all ones, result
/// inverted. ISA-L's `crc32_iscsi` does the table/PCLMUL work and leaves the final inversion
/// to the caller, which lets a digest be accumulated across several buffers.
public enum CRC32C {
    public static let seed: UInt32 = 0xFFFF_FFFF

    /// Continues a running CRC (start from `seed`); call `finish` once at the end.
    @inline(__always)
    public static func update(_ crc: UInt32, _ base: UnsafeRawPointer, _ count: Int) -> UInt32 {
        if count == 0 { return crc }
        return crc32_iscsi(UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: UInt8.self)), Int32(count), crc)
    }

    @inline(__always)
    public static func finish(_ crc: UInt32) -> UInt32 { ~crc }

    /// The digest of one contiguous buffer.
    @inline(__always)
    public static func checksum(_ base: UnsafeRawPointer, _ count: Int) -> UInt32 {
        finish(update(seed, base, count))
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0.baseAddress!, $0.count) }
    }
}
