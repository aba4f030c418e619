import CNVMeTypes
import NVMeWire

extension Controller {
    static let supportedLogPages: [UInt8] = [
        LogPage.supportedLogs, LogPage.error, LogPage.smart, LogPage.firmwareSlot,
        LogPage.changedNamespaces, LogPage.commandEffects, LogPage.featureEffects, LogPage.reservationNotification,
        LogPage.asymmetricAccess,
    ]

    /// Get Log Page: NUMD (NUMDU:NUMDL, 0-based dwords) bytes from offset LPO of the page.
    func getLogPage(_ sqe: SubmissionQueueEntry, data: UnsafeMutableRawBufferPointer, context: QueueContext,
                    target: Target) -> CommandCompletion {
        let lid = UInt8(truncatingIfNeeded: sqe.cdw10)
        let retainAsyncEvent = sqe.cdw10 & (1 << 15) != 0
        let dwords = Int((sqe.cdw10 >> 16) | ((sqe.cdw11 & 0xFFFF) << 16)) + 1
        let length = dwords * 4
        let offset = UInt64(sqe.cdw12) | UInt64(sqe.cdw13) << 32
        guard length <= data.count else { return .failure(.dataSGLLengthInvalid) }
        guard offset & 3 == 0 else { return .failure(.invalidField) }
        let page: [UInt8]
        switch lid {
        case LogPage.discovery where isDiscovery:
            let log = target.discoveryLog(hostNQN: hostNQN, portID: port.id, localAddress: context.localAddress)
            page = DiscoveryLog.encode(generation: log.generation, entries: log.entries)
            if !retainAsyncEvent { discoveryNoticeMasked = false }
        case LogPage.asymmetricAccess where !isDiscovery:
            // LSP bit 0 (RGO): groups only, without their NSID lists.
            let groupsOnly = (sqe.cdw10 >> 8) & 1 != 0
            page = ANALog.encode(changeCount: target.anaChangeCount, groups: target.anaReport(for: self), groupsOnly: groupsOnly)
            if !retainAsyncEvent { anaNoticeMasked = false }
        case LogPage.supportedLogs:
            page = LogPage.supportedLogPages(Self.supportedLogPages)
        case LogPage.error:
            page = LogPage.errorLog(errors.withLock { $0 }, capacity: 16)
        case LogPage.smart:
            guard sqe.nsid == 0 || sqe.nsid == 0xFFFF_FFFF || namespace(sqe.nsid) != nil else {
                return .failure(.invalidNamespace)
            }
            page = LogPage.smart(healthCounters())
        case LogPage.firmwareSlot:
            page = LogPage.firmwareSlot(revision: subsystem.identity.firmware ?? settings.firmwareRevision)
        case LogPage.changedNamespaces:
            page = LogPage.changedNamespaces(changedNamespaces)
            if !retainAsyncEvent {
                changedNamespaces.removeAll()
                namespaceNoticeMasked = false
            }
        case LogPage.reservationNotification:
            page = reservationNotificationPage(retain: retainAsyncEvent)
        case LogPage.featureEffects:
            page = featureEffects
        case LogPage.commandEffects:
            page = LogPage.commandEffects(admin: Self.adminOpcodesIO, io: IOCommand.supportedOpcodes, writes: IOCommand.writeOpcodes)
        default:
            return .failure(.invalidLogPage)
        }
        guard offset <= UInt64(page.count) else { return .failure(.invalidField) }
        let window = UnsafeMutableRawBufferPointer(rebasing: data[0..<length])
        var done = respond(page, from: Int(offset), into: window)
        done.dataLength = length
        return done
    }
}
