import NVMeWire
import Synchronization

/// What the subsystem model needs to know of the storage behind a namespace. The engine
/// provides it (FathomTarget knows nothing of files or io_uring).
public protocol NamespaceBackend: AnyObject {
    /// Capacity in logical blocks.
    var blockCount: UInt64 { get }
    /// log2 of the logical block size.
    var blockSizeShift: UInt8 { get }
    /// Blocks actually allocated on the backing store (for NUSE of sparse files).
    func allocatedBlocks() -> UInt64
    /// The same as `host` sees it (a clone namespace: the blocks that host wrote).
    func allocatedBlocks(host: String) -> UInt64
    /// Deallocated (trimmed) blocks are guaranteed to read as zeros (DLFEAT).
    var deallocatedReadsZero: Bool { get }
    /// Preferred write granularity in logical blocks (NPWG/NOWS), 0 when unknown.
    var preferredWriteBlocks: UInt16 { get }
}

extension NamespaceBackend {
    public func allocatedBlocks(host: String) -> UInt64 { allocatedBlocks() }
}

/// A namespace of a subsystem: identity plus the backend that stores its blocks.
public final class Namespace {
    public let nsid: UInt32
    public let nguid: [UInt8]
    public let uuid: [UInt8]
    public let readOnly: Bool
    public let backend: NamespaceBackend
    /// Path or other description of the backing store, for logs.
    public let label: String
    // Cached from the backend: checked on every I/O command.
    public let blockCount: UInt64
    public let blockSizeShift: UInt8
    /// Write protection set by a host (Set Features Write Protect), on top of `readOnly`.
    private let hostWriteProtect = Atomic<Bool>(false)

    /// Writes are refused: configured read-only, or write-protected by a host.
    @inline(__always)
    public var isWriteProtected: Bool { readOnly || hostWriteProtect.load(ordering: .relaxed) }

    func setHostWriteProtect(_ on: Bool) { hostWriteProtect.store(on, ordering: .relaxed) }

    /// Registrants and reservation; carried over when the namespace is resized or replaced.
    public let reservations: ReservationState
    /// Serializes fused Compare and Write against all other writes.
    public let writeGate = WriteGate()

    /// Hosts that may see this namespace (SPDK-style masking); nil: every host the
    /// subsystem admits.
    public let visibleHosts: Set<String>?
    /// ANA group (nvmetcli `ana_grpid`; 1 unless configured).
    public let anaGroupID: UInt32
    /// IEEE EUI-64 (`device.eui64`), if configured.
    public let eui64: [UInt8]?

    @inline(__always)
    public func isVisible(to host: String) -> Bool { visibleHosts?.contains(host) ?? true }

    public init(nsid: UInt32, nguid: [UInt8], uuid: [UInt8], readOnly: Bool, backend: NamespaceBackend, label: String,
                reservations: ReservationState = ReservationState(persistencePath: nil), visibleHosts: Set<String>? = nil,
                anaGroupID: UInt32 = 1, eui64: [UInt8]? = nil) {
        self.anaGroupID = anaGroupID
        self.eui64 = eui64
        self.reservations = reservations
        self.visibleHosts = visibleHosts
        self.nsid = nsid
        self.nguid = nguid
        self.uuid = uuid
        self.readOnly = readOnly
        self.backend = backend
        self.label = label
        self.blockCount = backend.blockCount
        self.blockSizeShift = backend.blockSizeShift
    }

    /// Identify Namespace for the controller of `host` (NUSE can differ per host).
    public func identity(shared: Bool, host: String = "") -> NamespaceIdentity {
        var id = NamespaceIdentity(blockCount: blockCount, blocksInUse: backend.allocatedBlocks(host: host), blockSizeShift: blockSizeShift,
                                   nguid: nguid, uuid: uuid, writeProtected: isWriteProtected, shared: shared,
                                   preferredWriteGranularity: backend.preferredWriteBlocks)
        id.deallocatedReadsZero = backend.deallocatedReadsZero
        // RESCAP: all six reservation types, IEKEY per NVMe 1.3+, PTPL where state can persist.
        id.reservationCapabilities = 0xFE | (reservations.persistencePath != nil ? 1 : 0)
        id.copyLimits = (IOCommand.maxSingleSourceRange, IOCommand.maxCopyLength, IOCommand.maxSourceRangeCount)
        id.anaGroupID = anaGroupID
        id.eui64 = eui64
        return id
    }
}
