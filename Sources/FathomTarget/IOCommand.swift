import CNVMeTypes
import NVMeWire

/// A validated I/O command, ready for a backend: byte offsets and lengths on the namespace.
public struct BlockRequest: Sendable {
    public enum Operation: Sendable { case read, write, flush, writeZeroes, deallocate, compare, verify, copy, reservation }

    /// Commands that reservations treat as writes (Flush included, as SPDK does).
    public var isWriteClass: Bool {
        switch operation {
        case .write, .flush, .writeZeroes, .deallocate, .copy: return true
        case .read, .compare, .verify, .reservation: return false
        }
    }
    public var operation: Operation
    /// Byte offset of the range (read, write, compare, verify, write zeroes).
    public var offset: UInt64
    /// Byte length of the range; for read, write and compare also the data transfer.
    public var length: Int
    public var forceUnitAccess: Bool
    public var startingLBA: UInt64
    /// Write Zeroes: the blocks may be deallocated (DEAC).
    public var deallocate = false
    /// Dataset Management / Copy: number of range descriptors in the command's data.
    public var rangeCount = 0
    /// Copy: byte offset of the destination.
    public var destination: UInt64 = 0

    public init(operation: Operation, offset: UInt64, length: Int, forceUnitAccess: Bool, startingLBA: UInt64) {
        self.operation = operation
        self.offset = offset
        self.length = length
        self.forceUnitAccess = forceUnitAccess
        self.startingLBA = startingLBA
    }
}

/// Opcodes of the NVM command set that Fathom implements, and what Identify reports of them.
public enum IOCommand {
    public static let flush = UInt8(nvme_cmd_flush.rawValue)
    public static let write = UInt8(nvme_cmd_write.rawValue)
    public static let read = UInt8(nvme_cmd_read.rawValue)
    public static let compare = UInt8(nvme_cmd_compare.rawValue)
    public static let writeZeroes = UInt8(nvme_cmd_write_zeroes.rawValue)
    public static let datasetManagement = UInt8(nvme_cmd_dsm.rawValue)
    public static let verify = UInt8(nvme_cmd_verify.rawValue)
    public static let copy = UInt8(nvme_cmd_copy.rawValue)
    public static let reservationRegister = UInt8(nvme_cmd_resv_register.rawValue)
    public static let reservationReport = UInt8(nvme_cmd_resv_report.rawValue)
    public static let reservationAcquire = UInt8(nvme_cmd_resv_acquire.rawValue)
    public static let reservationRelease = UInt8(nvme_cmd_resv_release.rawValue)
    static let supportedOpcodes: [UInt8] = [flush, write, read, compare, writeZeroes, datasetManagement, verify, copy,
                                            reservationRegister, reservationReport, reservationAcquire, reservationRelease]
    static let writeOpcodes: Set<UInt8> = [write, writeZeroes, datasetManagement, copy]

    /// ONCS: Compare, DSM, Write Zeroes, Save/Select in features, Reservations, Timestamp, Verify, Copy —
    /// exactly the optional commands that are implemented.
    public static let optionalCommandSupport: UInt16 = 1 << 0 | 1 << 2 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8

    /// Copy limits reported in Identify Namespace (in logical blocks; MSRC is 0-based).
    public static let maxSingleSourceRange: UInt16 = 2048
    public static let maxCopyLength: UInt32 = 65536
    public static let maxSourceRangeCount: UInt8 = 127
    /// Largest Dataset Management range count (NR is 0-based, 8 bits).
    public static let maxDatasetRanges = 256
}

/// The result of decoding one I/O command.
public enum IODecode {
    case ok(Namespace, BlockRequest)
    case fail(NVMeStatus)

    /// Decodes a command of `controller`'s I/O queue: its subsystem's namespaces as its host
    /// sees them, through the ANA states of the port it connected to.
    @inline(__always)
    public init(_ sqe: SubmissionQueueEntry, controller: __shared Controller, maxTransfer: Int, visibility: inout VisibilityCache) {
        let ns = controller.subsystem.namespace(sqe.nsid, visibleTo: controller.hostNQN, cache: &visibility)
        self.init(sqe, namespace: ns, maxTransfer: maxTransfer, ana: controller.port.ana)
    }

    /// Parameters are `__shared` (borrowed): an initializer otherwise takes them owned, which
    /// retained and released the subsystem and ANA table on every command.
    @inline(__always)
    /// `host`: the connected host's NQN, for namespaces masked to some hosts; `ana`: the
    /// ANA states of the port the command came through.
    public init(_ sqe: SubmissionQueueEntry, subsystem: __shared Subsystem, maxTransfer: Int, host: __shared String? = nil,
                ana: __shared ANAStates? = nil) {
        let ns = subsystem.namespace(sqe.nsid).flatMap { ns in host.map { ns.isVisible(to: $0) } ?? true ? ns : nil }
        self.init(sqe, namespace: ns, maxTransfer: maxTransfer, ana: ana)
    }

    /// Decodes `sqe` for namespace `ns` as found and checked for the host (nil: none it may see).
    @inline(__always)
    init(_ sqe: SubmissionQueueEntry, namespace: __shared Namespace?, maxTransfer: Int, ana: __shared ANAStates?) {
        guard let ns = namespace else {
            self = .fail(sqe.opcodeIsKnownIO ? .invalidNamespace : .invalidOpcode)
            return
        }
        if let ana, let status = ana.state(ns.anaGroupID).ioStatus {
            self = .fail(status)
            return
        }
        let shift = UInt64(ns.blockSizeShift)
        let sglLength = Int(sqe.sgl.length)
        func range(_ blocks: UInt64) -> NVMeStatus? {
            let slba = sqe.startingLBA
            return slba < ns.blockCount && blocks <= ns.blockCount - slba ? nil : .lbaOutOfRange
        }
        switch sqe.opcode {
        case IOCommand.read, IOCommand.write, IOCommand.compare:
            let write = sqe.opcode == IOCommand.write
            if write && ns.isWriteProtected { self = .fail(.namespaceWriteProtected); return }
            let blocks = UInt64(sqe.blockCountMinusOne) + 1
            if let s = range(blocks) { self = .fail(s); return }
            let length = Int(blocks << shift)
            guard length <= maxTransfer else { self = .fail(.invalidField); return }
            guard sglLength == length else { self = .fail(.dataSGLLengthInvalid); return }
            let op: BlockRequest.Operation = sqe.opcode == IOCommand.read ? .read : (write ? .write : .compare)
            self = .ok(ns, BlockRequest(operation: op, offset: sqe.startingLBA << shift, length: length,
                                        forceUnitAccess: sqe.forceUnitAccess, startingLBA: sqe.startingLBA))
        case IOCommand.flush:
            guard sglLength == 0 else { self = .fail(.dataSGLLengthInvalid); return }
            self = .ok(ns, BlockRequest(operation: .flush, offset: 0, length: 0, forceUnitAccess: false, startingLBA: 0))
        case IOCommand.writeZeroes, IOCommand.verify:
            let zeroes = sqe.opcode == IOCommand.writeZeroes
            if zeroes && ns.isWriteProtected { self = .fail(.namespaceWriteProtected); return }
            guard sglLength == 0 else { self = .fail(.dataSGLLengthInvalid); return }
            let blocks = UInt64(sqe.blockCountMinusOne) + 1
            if let s = range(blocks) { self = .fail(s); return }
            var r = BlockRequest(operation: zeroes ? .writeZeroes : .verify, offset: sqe.startingLBA << shift,
                                 length: Int(blocks << shift), forceUnitAccess: sqe.forceUnitAccess, startingLBA: sqe.startingLBA)
            r.deallocate = zeroes && sqe.cdw12 & (1 << 25) != 0
            self = .ok(ns, r)
        case IOCommand.datasetManagement:
            let count = Int(sqe.cdw10 & 0xFF) + 1
            // At least the ranges NR names; hosts may send more (Linux sends a whole
            // 4 KiB buffer on some paths), never more than the 256-range maximum.
            guard sglLength >= count * LBARanges.dsmEntrySize, sglLength <= IOCommand.maxDatasetRanges * LBARanges.dsmEntrySize else {
                self = .fail(.dataSGLLengthInvalid); return
            }
            let deallocate = sqe.cdw11 & (1 << 2) != 0
            if deallocate && ns.isWriteProtected { self = .fail(.namespaceWriteProtected); return }
            var r = BlockRequest(operation: .deallocate, offset: 0, length: 0, forceUnitAccess: false, startingLBA: 0)
            r.rangeCount = deallocate ? count : 0  // IDR/IDW hints alone need no work
            self = .ok(ns, r)
        case IOCommand.copy:
            if ns.isWriteProtected { self = .fail(.namespaceWriteProtected); return }
            let count = Int(sqe.cdw12 & 0xFF) + 1
            guard (sqe.cdw12 >> 8) & 0xF == 0 else { self = .fail(.invalidField); return }  // descriptor format 0 only
            guard count <= Int(IOCommand.maxSourceRangeCount) + 1 else { self = .fail(.commandSizeLimitExceeded); return }
            guard sglLength >= count * LBARanges.copyEntrySize, sglLength <= 256 * LBARanges.copyEntrySize else {
                self = .fail(.dataSGLLengthInvalid); return
            }
            var r = BlockRequest(operation: .copy, offset: 0, length: 0, forceUnitAccess: sqe.cdw12 & (1 << 30) != 0,
                                 startingLBA: sqe.startingLBA)
            r.rangeCount = count
            r.destination = sqe.startingLBA << shift
            self = .ok(ns, r)
        case IOCommand.reservationRegister, IOCommand.reservationAcquire, IOCommand.reservationRelease, IOCommand.reservationReport:
            let need = sqe.opcode == IOCommand.reservationReport ? (Int(sqe.cdw10) + 1) * 4
                : (sqe.opcode == IOCommand.reservationRelease ? 8 : 16)
            guard sglLength == need, need <= maxTransfer else { self = .fail(.dataSGLLengthInvalid); return }
            self = .ok(ns, BlockRequest(operation: .reservation, offset: 0, length: need, forceUnitAccess: false, startingLBA: 0))
        default:
            self = .fail(.invalidOpcode)
        }
    }
}

extension SubmissionQueueEntry {
    var opcodeIsKnownIO: Bool { IOCommand.supportedOpcodes.contains(opcode) }
}
