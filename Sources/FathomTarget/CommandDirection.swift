import NVMeWire

/// Data direction of a command, from the low two bits of its opcode (or of FCTYPE for
/// fabrics commands), as NVMe Base defines for every standard opcode.
public enum DataDirection: Sendable {
    case none, hostToController, controllerToHost, bidirectional

    public static let fabricsOpcode: UInt8 = 0x7F

    @inline(__always)
    public init(_ sqe: SubmissionQueueEntry) {
        let bits = sqe.opcode == Self.fabricsOpcode ? sqe.fabricsCommandType & 0x3 : sqe.opcode & 0x3
        switch bits {
        case 1: self = .hostToController
        case 2: self = .controllerToHost
        case 3: self = .bidirectional
        default: self = .none
        }
    }
}

/// How a command finished, as the transport needs it for the CQE and any C2HData.
public struct CommandCompletion: Sendable {
    public var status: NVMeStatus
    public var dw0: UInt32
    public var dw1: UInt32
    /// Bytes of the command's buffer to return to the host (controller-to-host commands).
    public var dataLength: Int

    public init(status: NVMeStatus, dw0: UInt32 = 0, dw1: UInt32 = 0, dataLength: Int = 0) {
        self.status = status
        self.dw0 = dw0
        self.dw1 = dw1
        self.dataLength = dataLength
    }

    public static func failure(_ status: NVMeStatus) -> CommandCompletion { CommandCompletion(status: status) }
    public static let success = CommandCompletion(status: .success)
}

/// Copies a response structure into the command's buffer, zero-filling what it does not
/// cover, and reports the whole buffer as transferred (what hosts expect of Identify and
/// Get Log Page: exactly the length they asked for).
@discardableResult
func respond(_ bytes: [UInt8], from offset: Int = 0, into data: UnsafeMutableRawBufferPointer) -> CommandCompletion {
    guard let base = data.baseAddress else { return .success }
    let available = max(0, bytes.count - offset)
    let n = min(available, data.count)
    if n > 0 { bytes.withUnsafeBytes { base.copyMemory(from: $0.baseAddress! + offset, byteCount: n) } }
    if n < data.count { (base + n).initializeMemory(as: UInt8.self, repeating: 0, count: data.count - n) }
    return CommandCompletion(status: .success, dataLength: data.count)
}
