import FathomTarget
import NVMeWire

/// Per-command state, preallocated per queue at Connect and reused: no per-command heap
/// allocation. A slot's index is also its R2T transfer tag.
struct CommandSlot {
    enum State: UInt8 {
        case free
        /// Waiting for H2CData after an R2T.
        case receivingData
        /// Running: in the backend or the admin executor.
        case executing
        /// An Asynchronous Event Request held until an event.
        case held
        /// Its response is queued or being sent.
        case responding
    }

    var state: State = .free
    var sqe = SubmissionQueueEntry(opcode: 0, commandID: 0)
    var buffer: UnsafeMutableRawPointer? = nil
    var bufferClass = 0
    /// Registered-buffer index of `buffer`'s slab (-1: not registered).
    var bufferFixed: Int32 = -1
    /// Start of the command's data within `buffer` (in-capsule data may start at an offset),
    /// or the backend's own memory for a Read served in place (`BlockBackend.readInPlace`).
    var data: UnsafeMutableRawPointer? = nil
    /// Data length from the SGL.
    var dataLength = 0
    /// In-capsule bytes that arrived with the command.
    var inCapsuleLength = 0
    /// H2CData bytes received so far.
    var received = 0
    var namespace: Namespace? = nil
    /// `namespace`'s storage binding, unretained (`namespace` holds it): the storage path
    /// reaches the backend without reference counting or a downcast per operation.
    var storage: Unmanaged<StorageNamespace>? = nil
    var request = BlockRequest(operation: .flush, offset: 0, length: 0, forceUnitAccess: false, startingLBA: 0)
    /// Bytes the backend has finished (short reads/writes are resubmitted for the rest).
    var storageDone = 0
    /// A second buffer: what Compare reads to compare against, what Verify and Copy read into.
    var aux: UnsafeMutableRawPointer? = nil
    var auxClass = 0
    var auxFixed: Int32 = -1
    var auxLength = 0
    /// Backend operations of this command still in flight.
    var pending = 0
    /// First error of a multi-operation command (-errno), 0 when none.
    var failure: Int32 = 0
    /// Where a multi-step command is (see ConnectionStorage).
    var step = StorageStep.main
    /// Range index (Dataset Management, Copy) and bytes done within the current range/chunk.
    var cursor = 0
    var rangeDone: UInt64 = 0
    var chunkLength = 0
    var chunkDone = 0
    /// Fused Compare and Write: 1 = the Compare, 2 = the Write; the other half's slot.
    var fuseRole: UInt8 = 0
    var fusePartner = -1
    var fuseDataReady = false
    /// The pair cannot run; the Compare completes with this once its data is in.
    var fuseFailure: NVMeStatus? = nil
    /// The command entered its namespace's write gate (leave when done).
    var gateEntered = false
    /// This fused Compare holds its namespace's write gate closed.
    var holdsGate = false
    /// The command's ID is marked in use on the queue (cleared when its response is queued).
    var cidTracked = false
    /// When the R2T went out (for the unanswered-R2T deadline).
    var r2tAtMs: Int64 = 0
    /// C2HData bytes that precede the response (0 = none).
    var c2hLength = 0
    /// The C2HData carries SUCCESS and no CapsuleResp follows.
    var skipResponse = false
    /// The completion of a command that a storage worker executed (a reservation change kept
    /// through power loss), written there before its result reaches the reactor.
    var deferredCompletion = CommandCompletion(status: .success)
}

/// Steps of commands that take more than one backend operation.
enum StorageStep: UInt8 {
    case main
    /// Write Zeroes fallbacks: punch a hole, then write zeros from a zeroed buffer.
    case punchHole, zeroWrites
    /// FUA on a command without a FUA flag of its own (Write Zeroes, Copy): a flush after it.
    case durable
    case copyRead, copyWrite
}

/// Slots in chunks of 64 that never move once created, so the queue can grow at Connect
/// while pointers into existing slots (pending sends, in-flight I/O) stay valid.
struct SlotTable {
    static let chunkShift = 6
    static let chunkSize = 1 << chunkShift
    /// Per slot: C2HData header (0), CapsuleResp (32), R2T (64), data digest (96).
    static let headerStride = 128

    private(set) var chunks: [UnsafeMutablePointer<CommandSlot>] = []
    private(set) var headerChunks: [UnsafeMutableRawPointer] = []
    private(set) var freeList: [Int32] = []
    var count: Int { chunks.count * Self.chunkSize }
    var inUse: Int { count - freeList.count }

    mutating func grow(to n: Int) {
        while count < n {
            let base = count
            let chunk = UnsafeMutablePointer<CommandSlot>.allocate(capacity: Self.chunkSize)
            chunk.initialize(repeating: CommandSlot(), count: Self.chunkSize)
            chunks.append(chunk)
            let headers = UnsafeMutableRawPointer.allocate(byteCount: Self.chunkSize * Self.headerStride, alignment: 64)
            headers.initializeMemory(as: UInt8.self, repeating: 0, count: Self.chunkSize * Self.headerStride)
            headerChunks.append(headers)
            freeList.reserveCapacity(count)
            for i in (base..<(base + Self.chunkSize)).reversed() { freeList.append(Int32(i)) }
        }
    }

    @inline(__always)
    subscript(i: Int) -> UnsafeMutablePointer<CommandSlot> { chunks[i >> Self.chunkShift] + (i & (Self.chunkSize - 1)) }

    @inline(__always)
    func header(_ i: Int) -> UnsafeMutableRawPointer {
        headerChunks[i >> Self.chunkShift] + (i & (Self.chunkSize - 1)) * Self.headerStride
    }

    @inline(__always)
    mutating func take() -> Int? { freeList.popLast().map(Int.init) }

    @inline(__always)
    mutating func give(_ i: Int) { freeList.append(Int32(i)) }

    func deallocate() {
        for c in chunks {
            c.deinitialize(count: Self.chunkSize)
            c.deallocate()
        }
        for h in headerChunks { h.deallocate() }
    }
}
