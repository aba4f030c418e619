import CNVMeTypes
import NVMeWire

/// How an admin command ends: now, or later (an AER held until an event).
public enum AdminOutcome {
    case complete(CommandCompletion)
    case held
    /// Fabrics Disconnect: complete, then close this queue.
    case disconnect(CommandCompletion)
    /// Abort of a held command: complete the Abort, and the held command with Command
    /// Abort Requested.
    case completeAndAbort(CommandCompletion, abortedCommandID: UInt16)
    /// Validated, but its effect writes and syncs a file (a reservation state kept through
    /// power loss): the transport runs `work` off its event loop, one at a time per `key`,
    /// and completes the command with what it returns. `work` touches only state that is
    /// safe from any thread.
    case completeElsewhere(key: ObjectIdentifier, work: () -> CommandCompletion)
}

/// Connection facts an admin command may need.
public struct QueueContext: Sendable {
    public var queueID: UInt16
    /// The address the host reached us on (for discovery log TRADDR).
    public var localAddress: String
    public init(queueID: UInt16, localAddress: String) {
        self.queueID = queueID
        self.localAddress = localAddress
    }
}

extension Controller {
    static let adminOpcodesIO: [UInt8] = [
        UInt8(nvme_admin_get_log_page.rawValue), UInt8(nvme_admin_identify.rawValue), UInt8(nvme_admin_abort_cmd.rawValue),
        UInt8(nvme_admin_set_features.rawValue), UInt8(nvme_admin_get_features.rawValue),
        UInt8(nvme_admin_async_event.rawValue), UInt8(nvme_admin_keep_alive.rawValue),
    ]

    /// Executes a command from the admin queue (fabrics commands included). `data` is the
    /// command's buffer: host data for host-to-controller commands, room for the response
    /// otherwise; its size is the SGL length.
    public func executeAdmin(_ sqe: SubmissionQueueEntry, data: UnsafeMutableRawBufferPointer, context: QueueContext,
                             target: Target) -> AdminOutcome {
        if sqe.opcode == DataDirection.fabricsOpcode {
            switch UInt32(sqe.fabricsCommandType) {
            case nvme_fabrics_type_property_get.rawValue: return .complete(propertyGet(sqe))
            case nvme_fabrics_type_property_set.rawValue: return .complete(propertySet(sqe))
            case nvme_fabrics_type_disconnect.rawValue: return .disconnect(.success)
            case nvme_fabrics_type_connect.rawValue: return .complete(.failure(.commandSequenceError))
            default: return .complete(.failure(.invalidOpcode))
            }
        }
        // Until CC.EN=1 / CSTS.RDY=1 only fabrics commands are allowed.
        guard isReady else { return .complete(.failure(.commandSequenceError)) }
        if isDiscovery { return executeDiscoveryAdmin(sqe, data: data, context: context, target: target) }
        switch UInt32(sqe.opcode) {
        case nvme_admin_identify.rawValue: return .complete(identify(sqe, data: data))
        case nvme_admin_get_log_page.rawValue: return .complete(getLogPage(sqe, data: data, context: context, target: target))
        case nvme_admin_set_features.rawValue: return setFeature(sqe, data: data, target: target)
        case nvme_admin_get_features.rawValue: return .complete(getFeature(sqe, data: data))
        case nvme_admin_keep_alive.rawValue: return .complete(.success)
        case nvme_admin_async_event.rawValue: return asyncEventRequest(sqe)
        case nvme_admin_abort_cmd.rawValue:
            return abort(sqe)
        default: return .complete(.failure(.invalidOpcode))
        }
    }

    private func executeDiscoveryAdmin(_ sqe: SubmissionQueueEntry, data: UnsafeMutableRawBufferPointer,
                                       context: QueueContext, target: Target) -> AdminOutcome {
        switch UInt32(sqe.opcode) {
        case nvme_admin_identify.rawValue:
            guard sqe.cdw10 & 0xFF == UInt32(NVME_IDENTIFY_CNS_CTRL.rawValue) else { return .complete(.failure(.invalidField)) }
            return .complete(identify(sqe, data: data))
        case nvme_admin_get_log_page.rawValue:
            guard UInt8(truncatingIfNeeded: sqe.cdw10) == LogPage.discovery else { return .complete(.failure(.invalidLogPage)) }
            return .complete(getLogPage(sqe, data: data, context: context, target: target))
        case nvme_admin_set_features.rawValue: return setFeature(sqe, data: data, target: target)
        case nvme_admin_get_features.rawValue: return .complete(getFeature(sqe, data: data))
        case nvme_admin_keep_alive.rawValue: return .complete(.success)
        case nvme_admin_async_event.rawValue: return asyncEventRequest(sqe)
        default: return .complete(.failure(.invalidOpcode))
        }
    }

    /// Abort: a held Asynchronous Event Request is aborted (it completes with Command Abort
    /// Requested). Every other command starts executing as soon as its data is in, so it has
    /// nothing left to abort: DW0 bit 0 = 1 reports "not aborted", as the specification
    /// allows.
    private func abort(_ sqe: SubmissionQueueEntry) -> AdminOutcome {
        let sqid = UInt16(truncatingIfNeeded: sqe.cdw10)
        let cid = UInt16(truncatingIfNeeded: sqe.cdw10 >> 16)
        if sqid == 0, let k = heldAsyncEvents.firstIndex(of: cid) {
            heldAsyncEvents.remove(at: k)
            return .completeAndAbort(CommandCompletion(status: .success, dw0: 0), abortedCommandID: cid)
        }
        return .complete(CommandCompletion(status: .success, dw0: 1))
    }

    private func asyncEventRequest(_ sqe: SubmissionQueueEntry) -> AdminOutcome {
        guard heldAsyncEvents.count <= Int(Self.asyncEventLimit) else { return .complete(.failure(.asyncEventLimitExceeded)) }
        if let event = holdAsyncEvent(commandID: sqe.commandID) {
            return .complete(CommandCompletion(status: .success, dw0: event))
        }
        return .held
    }

    /// AERL (0-based): four outstanding AERs, as nvmet allows.
    static let asyncEventLimit: UInt8 = 3

    // MARK: Identify

    func identify(_ sqe: SubmissionQueueEntry, data: UnsafeMutableRawBufferPointer) -> CommandCompletion {
        guard data.count >= 4096 else { return .failure(.dataSGLLengthInvalid) }
        let cns = sqe.cdw10 & 0xFF
        switch cns {
        case UInt32(NVME_IDENTIFY_CNS_CTRL.rawValue):
            return respond(identity().encode(), into: data)
        case UInt32(NVME_IDENTIFY_CNS_NS.rawValue):
            guard sqe.nsid != 0, sqe.nsid != 0xFFFF_FFFF, sqe.nsid <= Subsystem.maxNamespaces else {
                return .failure(.invalidNamespace)
            }
            // An inactive NSID in range gets a zero-filled structure.
            guard let ns = namespace(sqe.nsid) else { return respond([], into: data) }
            return respond(ns.identity(shared: true, host: hostNQN).encode(), into: data)
        case UInt32(NVME_IDENTIFY_CNS_NS_ACTIVE_LIST.rawValue):
            guard sqe.nsid < 0xFFFF_FFFE else { return .failure(.invalidNamespace) }
            return respond(encodeActiveNamespaceList(visibleNamespaces.map(\.nsid), after: sqe.nsid), into: data)
        case UInt32(NVME_IDENTIFY_CNS_NS_DESC_LIST.rawValue):
            guard let ns = namespace(sqe.nsid) else { return .failure(.invalidNamespace) }
            return respond(ns.identity(shared: true).encodeDescriptors(), into: data)
        default:
            return .failure(.invalidField)
        }
    }

    public func identity() -> ControllerIdentity {
        var id = ControllerIdentity(
            kind: isDiscovery ? .discovery : .io, controllerID: id, serial: subsystem.serial, model: subsystem.model,
            firmware: subsystem.identity.firmware ?? settings.firmwareRevision, version: subsystem.identity.version,
            subsystemNQN: subsystem.nqn,
            maxDataTransferExponent: settings.mdtsExponent, namespaceCount: isDiscovery ? 0 : Subsystem.maxNamespaces,
            maxCommands: UInt16(min(maxQueueEntries, 0xFFFF)),
            inCapsuleDataSize: ioInCapsuleDataSize, keepAliveSupport: settings.keepAliveGranularity,
            volatileWriteCache: !isDiscovery, multiController: !isDiscovery, asyncEventLimit: Self.asyncEventLimit,
            optionalNVMCommands: isDiscovery ? 0 : IOCommand.optionalCommandSupport)
        id.asymmetricAccess = !isDiscovery
        return id
    }
}
