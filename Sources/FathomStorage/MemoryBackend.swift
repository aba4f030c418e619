import CLiburing
#if canImport(Glibc)
import Glibc
#endif

/// A namespace in memory: for tests and for benchmarks that must not measure a disk.
/// Operations complete inline (there is nothing to wait for), so the reactor skips the
/// kernel round trip. The memory is populated at creation (like SPDK's malloc bdev): a
/// page fault on the first touch of every page would otherwise dominate what a benchmark
/// on it measures.
public final class MemoryBackend: BlockBackend {
    public let blockCount: UInt64
    public let blockSizeShift: UInt8
    public let isReadOnly: Bool
    private let base: UnsafeMutableRawPointer
    private let bytes: Int

    public init(bytes: UInt64, blockSize: Int = 512, readOnly: Bool = false) throws {
        let size = Int(bytes)
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              p != MAP_FAILED else {
            throw StorageError(path: "(memory)", errno: errno, action: "cannot reserve \(bytes) bytes for")
        }
        // Transparent huge pages where the kernel allows them: random 4 KiB reads over a large
        // namespace otherwise miss the TLB on nearly every command. Then populate (as before).
        _ = madvise(p, size, MADV_HUGEPAGE)
        if madvise(p, size, 23 /* MADV_POPULATE_WRITE, Linux 5.14 */) != 0 {
            var page = 0
            while page < size {
                p.storeBytes(of: 0, toByteOffset: page, as: UInt8.self)
                page += 4096
            }
        }
        base = p
        self.bytes = size
        blockSizeShift = UInt8(blockSize.trailingZeroBitCount)
        blockCount = bytes >> UInt64(blockSizeShift)
        isReadOnly = readOnly
    }

    deinit { munmap(base, bytes) }

    public func allocatedBlocks() -> UInt64 { blockCount }
    public var deallocatedReadsZero: Bool { true }
    public var preferredWriteBlocks: UInt16 { 0 }

    public func prepare(_ operation: StorageOperation, sqe: () -> UnsafeMutablePointer<io_uring_sqe>) -> Int32? {
        switch operation {
        case let .read(buffer, length, offset):
            buffer.copyMemory(from: base + Int(offset), byteCount: length)
            return Int32(length)
        case let .write(buffer, length, offset, _):
            if isReadOnly { return -EROFS }
            (base + Int(offset)).copyMemory(from: buffer, byteCount: length)
            return Int32(length)
        case .flush:
            return 0
        case let .writeZeroes(offset, length, _), let .deallocate(offset, length):
            if isReadOnly { return -EROFS }
            memset(base + Int(offset), 0, Int(length))
            return 0
        }
    }

    public func readInPlace(offset: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        guard offset <= UInt64(bytes), length <= bytes - Int(offset) else { return nil }
        return base + Int(offset)
    }

    public func close() {}
}

/// A namespace that stores nothing: reads return zeros, writes are dropped. The baseline
/// for measuring the transport alone (SPDK's null bdev, nvmet's null_blk).
public final class NullBackend: BlockBackend {
    public let blockCount: UInt64
    public let blockSizeShift: UInt8
    public let isReadOnly: Bool

    public init(bytes: UInt64, blockSize: Int = 512, readOnly: Bool = false) {
        blockSizeShift = UInt8(blockSize.trailingZeroBitCount)
        blockCount = bytes >> UInt64(blockSizeShift)
        isReadOnly = readOnly
    }

    public func allocatedBlocks() -> UInt64 { 0 }
    public var deallocatedReadsZero: Bool { true }
    public var preferredWriteBlocks: UInt16 { 0 }

    public func prepare(_ operation: StorageOperation, sqe: () -> UnsafeMutablePointer<io_uring_sqe>) -> Int32? {
        switch operation {
        case let .read(buffer, length, _):
            memset(buffer, 0, length)
            return Int32(length)
        case let .write(_, length, _, _):
            return isReadOnly ? -EROFS : Int32(length)
        case .flush:
            return 0
        case .writeZeroes, .deallocate:
            return isReadOnly ? -EROFS : 0
        }
    }

    /// Reads are sent from one read-only anonymous mapping: every page of it is the kernel's
    /// shared zero page, so it costs no memory and no command buffer is zeroed.
    public func readInPlace(offset: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        guard let zeros = Self.zeros, length <= Self.zerosLength else { return nil }
        return zeros
    }

    private static let zerosLength = 64 << 20
    private static let zeros: UnsafeMutableRawPointer? = {
        guard let p = mmap(nil, zerosLength, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else { return nil }
        return p
    }()

    public func close() {}
}
