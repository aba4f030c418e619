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

extension StorageOperation {
    /// What `prepare` returns for an operation that may block and is not one ring operation
    /// (a clone's copy-up chain, an `fdatasync` of two files): the engine then calls `perform`
    /// with it on a storage worker thread, never on a reactor, and takes its result as the
    /// operation's completion.
    public static let runsOnWorker: Int32 = .min
}

/// The storage behind a namespace. A backend either prepares an io_uring SQE (the reactor
/// submits it with its socket I/O in one batch), or, for backends with nothing to wait on,
/// completes the operation inline, or asks for a storage worker (`runsOnWorker`).
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
    /// -errno), or returns `StorageOperation.runsOnWorker`.
    func prepare(_ operation: StorageOperation, sqe: () -> UnsafeMutablePointer<io_uring_sqe>) -> Int32?
    /// Runs an operation that `prepare` sent to a worker, to the end (bytes or -errno). May
    /// block; called on a storage worker thread, possibly several at once for one backend.
    func perform(_ operation: StorageOperation) -> Int32
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
    /// Backends that never answer `runsOnWorker` are never asked.
    public func perform(_ operation: StorageOperation) -> Int32 { -ENOTSUP }
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
