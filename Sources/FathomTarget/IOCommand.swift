import CNVMeTypes
import NVMeWire

/// A validated I/O command, ready for a backend: byte offset and length on the namespace.
public struct BlockRequest: Sendable {
    public enum Operation: Sendable { case read, write, flush }
    public var operation: Operation
    public var offset: UInt64
    public var length: Int
    public var forceUnitAccess: Bool
    public var startingLBA: UInt64

    public init(operation: Operation, offset: UInt64, length: Int, forceUnitAccess: Bool, startingLBA: UInt64) {
        self.operation = operation
        self.offset = offset
        self.length = length
        self.forceUnitAccess = forceUnitAccess
        self.startingLBA = startingLBA
    }
}

/// Decoding of I/O queue commands. Everything the host controls is checked here: opcode,
/// NSID, LBA range, transfer size against MDTS and against the SGL, write protection.
public enum IOCommand {
    public static let read = UInt8(nvme_cmd_read.rawValue)
    public static let write = UInt8(nvme_cmd_write.rawValue)
    public static let flush = UInt8(nvme_cmd_flush.rawValue)
    static let supportedOpcodes: [UInt8] = [flush, write, read]
    static let writeOpcodes: Set<UInt8> = [write]
}

/// The result of decoding one I/O command.
public enum IODecode {
    case ok(Namespace, BlockRequest)
    case fail(NVMeStatus)

    @inline(__always)
    public init(_ sqe: SubmissionQueueEntry, subsystem: Subsystem, maxTransfer: Int) {
        let op: BlockRequest.Operation
        switch sqe.opcode {
        case IOCommand.read: op = .read
        case IOCommand.write: op = .write
        case IOCommand.flush: op = .flush
        default:
            self = .fail(.invalidOpcode)
            return
        }
        guard let ns = subsystem.namespace(sqe.nsid) else {
            self = .fail(.invalidNamespace)
            return
        }
        if op == .flush {
            guard sqe.sgl.length == 0 else {
                self = .fail(.dataSGLLengthInvalid)
                return
            }
            self = .ok(ns, BlockRequest(operation: .flush, offset: 0, length: 0, forceUnitAccess: false, startingLBA: 0))
            return
        }
        if op == .write && ns.readOnly {
            self = .fail(.namespaceWriteProtected)
            return
        }
        let slba = sqe.startingLBA
        let blocks = UInt64(sqe.blockCountMinusOne) + 1
        guard slba < ns.blockCount, blocks <= ns.blockCount - slba else {
            self = .fail(.lbaOutOfRange)
            return
        }
        let length = Int(blocks) << Int(ns.blockSizeShift)
        guard length <= maxTransfer else {
            self = .fail(.invalidField)
            return
        }
        guard Int(sqe.sgl.length) == length else {
            self = .fail(.dataSGLLengthInvalid)
            return
        }
        self = .ok(ns, BlockRequest(operation: op, offset: slba << UInt64(ns.blockSizeShift), length: length,
                                    forceUnitAccess: sqe.forceUnitAccess, startingLBA: slba))
    }
}
