import CLiburing

/// One storage operation of a namespace, in bytes.
public enum StorageOperation {
    case read(buffer: UnsafeMutableRawPointer, length: Int, offset: UInt64)
    case write(buffer: UnsafeMutableRawPointer, length: Int, offset: UInt64, forceUnitAccess: Bool)
    case flush
    /// The range reads as zeros afterwards. `deallocate` allows freeing the blocks (a hole)
    /// instead of writing zeros.
    case writeZeroes(offset: UInt64, length: UInt64, deallocate: Bool)
    /// The host no longer needs the range (TRIM). Reads of it return zeros afterwards on
    /// every backend here (DLFEAT reports that).
    case deallocate(offset: UInt64, length: UInt64)
}

/// The storage behind a namespace. A backend either prepares an io_uring SQE (the reactor
/// submits it with its socket I/O in one batch) or, for backends with nothing to wait on,
/// completes the operation inline.
public protocol BlockBackend: AnyObject {
    var blockCount: UInt64 { get }
    var blockSizeShift: UInt8 { get }
    var isReadOnly: Bool { get }
    /// Blocks allocated on the backing store (st_blocks for sparse files).
    func allocatedBlocks() -> UInt64
    /// A deallocated range reads back as zeros.
    var deallocatedReadsZero: Bool { get }
    /// Preferred write granularity in logical blocks (0 = no hint).
    var preferredWriteBlocks: UInt16 { get }
    /// Prepares `operation` on an SQE obtained from `sqe` (the completion arrives on the
    /// ring), or performs it inline without taking one and returns the result (bytes or
    /// -errno).
    func prepare(_ operation: StorageOperation, sqe: () -> UnsafeMutablePointer<io_uring_sqe>) -> Int32?
    /// Memory already holding the `length` bytes at `offset`, for backends whose blocks live
    /// in this process (memory, null); nil for the others. The engine sends a Read's data
    /// straight from it instead of copying it into a command buffer first (SPDK's malloc bdev
    /// does the same with its zero-copy API). The memory must stay valid while the command
    /// holds its namespace, and nothing may write through the pointer.
    func readInPlace(offset: UInt64, length: Int) -> UnsafeMutableRawPointer?
    /// Releases the file descriptor. Called once no operation is in flight.
    func close()
}

extension BlockBackend {
    public func readInPlace(offset: UInt64, length: Int) -> UnsafeMutableRawPointer? { nil }
}

/// Why a backend could not be opened, worded for the operator.
public struct StorageError: Error, CustomStringConvertible {
    public var path: String
    public var errno: Int32
    public var action: String
    public var description: String {
        "\(action) \(path): \(String(cString: strerror(errno))) (errno \(errno))"
    }
}
