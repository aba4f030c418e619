/// What a perf run sends: I/O size, pattern, queue depth, target geometry.
struct Workload {
    enum Pattern: String, CaseIterable {
        case randread, read, randwrite, write, randrw
    }

    var pattern: Pattern
    var ioSize: Int
    var queueDepth: Int
    var nsid: UInt32
    var blockSize: Int
    /// Namespace size in blocks (the range I/O is spread over).
    var blocks: UInt64
    /// Percentage of reads for randrw.
    var readPercent: Int
    var verify: Bool

    var blocksPerIO: Int { ioSize / blockSize }
    /// Number of distinct I/O-sized slots in the namespace.
    var slots: UInt64 { max(1, blocks / UInt64(blocksPerIO)) }
}

/// xorshift64*: a fast, seedable generator for LBAs and read/write mixes (the system
/// generator costs more than the I/O it chooses).
struct FastRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed | 1 }
    @inline(__always)
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }
}

/// Per-LBA test data for verification: the first 16 bytes of every block carry its LBA
/// and a run tag, the rest is a fixed pattern; a read can be checked without any state.
enum VerifyPattern {
    static func fill(_ p: UnsafeMutableRawPointer, lba: UInt64, blocks: Int, blockSize: Int, tag: UInt64) {
        for b in 0..<blocks {
            let q = p + b * blockSize
            q.storeBytes(of: (lba + UInt64(b)).littleEndian, as: UInt64.self)
            q.storeBytes(of: tag.littleEndian, toByteOffset: 8, as: UInt64.self)
            (q + 16).initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: lba &+ UInt64(b)), count: blockSize - 16)
        }
    }

    static func check(_ p: UnsafeRawPointer, lba: UInt64, blocks: Int, blockSize: Int, tag: UInt64) -> Bool {
        for b in 0..<blocks {
            let q = p + b * blockSize
            guard UInt64(littleEndian: q.loadUnaligned(as: UInt64.self)) == lba + UInt64(b),
                  UInt64(littleEndian: q.loadUnaligned(fromByteOffset: 8, as: UInt64.self)) == tag else { return false }
        }
        return true
    }
}
