import CLiburing
import CNVMeTypes
import FathomStorage
import FathomTarget
import NVMeWire
#if canImport(Glibc)
import Glibc
#endif

/// Command execution: SGL checks, Connect, admin commands through the subsystem model,
/// I/O commands through the backend on this reactor's ring.
extension Connection {
    /// The command's SQE (and in-capsule data, if any) is in slot `i`.
    func startCommand(_ i: Int) {
        let s = slots[i]
        if queueSize > 0 { sqHead = UInt16((Int(sqHead) + 1) % queueSize) }
        let nowMs = reactor.nowMs
        _ = withController { $0.noteActivity(nowMs: nowMs) }
        let sqe = s.pointee.sqe
        let sgl = sqe.sgl
        let length = Int(sgl.length)
        let direction = DataDirection(sqe)

        let cid = Int(sqe.commandID)
        guard activeCIDs[cid >> 6] & (1 << UInt64(cid & 63)) == 0 || abandonHeldAsyncEvent(commandID: sqe.commandID) else {
            return complete(i, .failure(.commandIDConflict))
        }
        activeCIDs[cid >> 6] |= 1 << UInt64(cid & 63)
        s.pointee.cidTracked = true

        // Fabrics use SGLs only (PSDT 01b or 10b).
        guard sqe.psdt == 1 || sqe.psdt == 2 else { return complete(i, .failure(.invalidField)) }
        guard length <= reactor.settings.maxDataTransfer else { return complete(i, .failure(.invalidField)) }

        if s.pointee.inCapsuleLength > 0 {
            guard sgl.isInCapsule else { return complete(i, .failure(.sglDescriptorTypeInvalid)) }
            guard sgl.address <= UInt64(s.pointee.inCapsuleLength), length <= s.pointee.inCapsuleLength - Int(sgl.address) else {
                return complete(i, .failure(.dataSGLLengthInvalid))
            }
            guard direction == .hostToController else { return complete(i, .failure(.sglDescriptorTypeInvalid)) }
            s.pointee.data = s.pointee.buffer! + Int(sgl.address)
            s.pointee.dataLength = length
        } else if length > 0 {
            guard sgl.isTransport else {
                return complete(i, .failure(sgl.isInCapsule ? .dataSGLLengthInvalid : .sglDescriptorTypeInvalid))
            }
            guard direction == .hostToController || direction == .controllerToHost else {
                return complete(i, .failure(.invalidField))
            }
        } else if sgl.identifier != SGLDescriptor.transportIdentifier && sgl.identifier != SGLDescriptor.inCapsuleIdentifier {
            return complete(i, .failure(.sglDescriptorTypeInvalid))
        }

        // I/O commands are validated before any data is asked for.
        if !isAdminQueue && sqe.opcode != DataDirection.fabricsOpcode, let ref = controllerRef {
            if let status = ref._withUnsafeGuaranteedRef({ decodeIO(i, sqe, $0) }) { return complete(i, .failure(status)) }
            if sqe.fuse != 0, let status = pairFused(i) { return complete(i, .failure(status)) }
        }

        if s.pointee.inCapsuleLength == 0 && length > 0 {
            attachBuffer(i, length: length)
            if direction == .hostToController {
                // One R2T for the whole transfer; the host splits it by MAXH2CDATA.
                s.pointee.state = .receivingData
                s.pointee.received = 0
                sendR2T(i)
                noteDataTraffic()
                return
            }
        }
        execute(i)
    }

    /// Decodes I/O command `sqe` of slot `i` for `ctrl` (borrowed by the caller) and puts the
    /// namespace and request in the slot; returns the status to fail it with, if any.
    @inline(__always)
    private func decodeIO(_ i: Int, _ sqe: SubmissionQueueEntry, _ ctrl: Controller) -> NVMeStatus? {
        if pendingFusedFirst >= 0 && sqe.fuse != 2 { failPendingFusedFirst(.fusedCommandMissing) }
        switch IODecode(sqe, controller: ctrl, maxTransfer: reactor.settings.maxDataTransfer, visibility: &visibility) {
        case let .fail(status):
            if sqe.fuse == 2 { failPendingFusedFirst(.fusedCommandFailed) }
            return status
        case let .ok(ns, request):
            if let conflict = ctrl.reservationConflict(request, on: ns) {
                if sqe.fuse == 2 { failPendingFusedFirst(.fusedCommandFailed) }
                return conflict
            }
            let s = slots[i]
            s.pointee.namespace = ns
            s.pointee.storage = Unmanaged.passUnretained(unsafeDowncast(ns.backend as AnyObject, to: StorageNamespace.self))
            s.pointee.request = request
            if request.operation == .write && !ctrl.volatileWriteCacheEnabled {
                s.pointee.request.forceUnitAccess = true
            }
            return nil
        }
    }

    /// All of the command's data is in: run it.
    func execute(_ i: Int) {
        let s = slots[i]
        let sqe = s.pointee.sqe
        guard let ctrl = controller else {
            guard sqe.opcode == DataDirection.fabricsOpcode, UInt32(sqe.fabricsCommandType) == nvme_fabrics_type_connect_raw else {
                return complete(i, .failure(.commandSequenceError))
            }
            return connect(i)
        }
        if isAdminQueue {
            let data = UnsafeMutableRawBufferPointer(start: s.pointee.data, count: s.pointee.data == nil ? 0 : s.pointee.dataLength)
            switch ctrl.executeAdmin(sqe, data: data, context: QueueContext(queueID: 0, localAddress: localAddress), target: reactor.target) {
            case let .complete(c): complete(i, c)
            case .held: s.pointee.state = .held
            case let .completeElsewhere(key, work): completeOnWorker(i, key: key, work: work)
            case let .disconnect(c): disconnect(i, c)
            case let .completeAndAbort(c, cid):
                complete(i, c)
                for k in 0..<slots.count where slots[k].pointee.state == .held && slots[k].pointee.sqe.commandID == cid {
                    complete(k, .failure(.abortRequested))
                }
            }
            return
        }
        if s.pointee.fuseRole != 0 { return fusedDataReady(i) }
        if sqe.opcode == DataDirection.fabricsOpcode {
            switch UInt32(sqe.fabricsCommandType) {
            case nvme_fabrics_type_disconnect_raw: return disconnect(i, .success)
            case nvme_fabrics_type_connect_raw: return complete(i, .failure(.commandSequenceError))
            default: return complete(i, .failure(.invalidOpcode))
            }
        }
        beginStorage(i)
    }

    private func disconnect(_ i: Int, _ c: CommandCompletion) {
        stopReading = true
        closeReason = "host sent Disconnect"
        closeAfterSend = true
        complete(i, c)
    }

    private func connect(_ i: Int) {
        let s = slots[i]
        let sqe = s.pointee.sqe
        let data = UnsafeRawBufferPointer(start: s.pointee.data, count: s.pointee.data == nil ? 0 : s.pointee.dataLength)
        let outcome = reactor.target.connect(sqe, data: data, port: port, peer: peer)
        switch outcome {
        case let .admin(ctrl, sqsize), let .io(ctrl, sqsize):
            controller = ctrl
            queueID = sqe.connectQueueID
            queueSize = sqsize
            sqFlowControlDisabled = sqe.connectAttributes & 0x4 != 0
            // Twice the queue depth: a slot stays busy until its response has left, which
            // can be after the host saw it and reused the command ID.
            slots.grow(to: 2 * sqsize + 1)
            var cloneSets: [(nsid: UInt32, clones: CloneSet)] = []
            if queueID == 0 {
                cloneSets = ctrl.visibleNamespaces.compactMap { ns in (ns.backend as? StorageNamespace)?.clones.map { (ns.nsid, $0) } }
                let reactor = self.reactor
                ctrl.setEventRoute(Controller.EventRoute(
                    run: { work in reactor.post(work) },
                    complete: { [weak self] cid, dw0 in self?.completeHeldEvent(commandID: cid, dw0: dw0) }))
            }
            logger.info(queueID == 0 ? "controller \(ctrl.id) created" : "I/O queue connected",
                        metadata: ["host": "\(ctrl.hostNQN)", "peer": "\(peer)", "subsystem": "\(ctrl.subsystem.nqn)",
                                   "qid": "\(queueID)", "sqsize": "\(sqsize)", "kato_ms": "\(ctrl.keepAliveTimeoutMs)",
                                   "digest": "\(digests.header ? "H" : "")\(digests.data ? "D" : "")"])
            let done = CommandCompletion(status: .success, dw0: queueID == 0 ? UInt32(ctrl.id) : 0)
            guard !cloneSets.isEmpty else { return complete(i, done) }
            // A host's clones are created on its first connect (not its first write), so a
            // full disk shows at once in the log rather than as I/O errors later. Creating
            // one writes files (and reads a large map back), so it runs on a storage worker
            // and the Connect completes once it is done.
            let host = ctrl.hostNQN, subsystem = ctrl.subsystem.nqn, logger = self.logger
            completeOnWorker(i, key: ObjectIdentifier(ctrl)) {
                for (nsid, clones) in cloneSets {
                    if let failed = clones.backend(for: host) as? FailingBackend {
                        logger.error("cannot open the clone of \(host)", metadata: [
                            "subsystem": "\(subsystem)", "nsid": "\(nsid)", "reason": "\(failed.reason ?? "?")"])
                    }
                }
                return done
            }
        case let .rejected(status, dw0):
            let d = ConnectData(decoding: data.baseAddress ?? UnsafeRawPointer(staging))
            logger.warning("connect refused", metadata: ["peer": "\(peer)", "host": "\(d.hostNQN)", "subsystem": "\(d.subsystemNQN)",
                                                         "qid": "\(sqe.connectQueueID)", "status": "\(status)"])
            complete(i, CommandCompletion(status: status, dw0: dw0))
        }
    }

    // MARK: Responses

    /// Builds the response PDUs of slot `i` in its header area and queues them.
    func complete(_ i: Int, _ c: CommandCompletion, lba: UInt64 = 0) {
        let s = slots[i]
        let sqe = s.pointee.sqe
        if s.pointee.gateEntered {
            s.pointee.gateEntered = false
            s.pointee.namespace?.writeGate.leave()
        }
        if s.pointee.cidTracked {
            s.pointee.cidTracked = false
            let cid = Int(sqe.commandID)
            activeCIDs[cid >> 6] &= ~(1 << UInt64(cid & 63))
        }
        if !c.status.isSuccess {
            controller?.recordError(queueID: queueID, commandID: sqe.commandID, status: c.status, lba: lba, nsid: sqe.nsid)
        }
        if state == .closing {
            releaseSlot(i)
            return
        }
        let hdr = slots.header(i)
        let hd = digests.headerDigestLength
        let c2h = c.status.isSuccess && c.dataLength > 0 && s.pointee.data != nil ? min(c.dataLength, s.pointee.dataLength) : 0
        s.pointee.c2hLength = c2h
        s.pointee.skipResponse = false
        if c2h > 0 {
            let success = sqFlowControlDisabled
            s.pointee.skipResponse = success
            let flags = PDUFlags.lastPDU | (success ? PDUFlags.success : 0) | digests.flags
            DataTransferHeader(commandID: sqe.commandID, offset: 0, length: UInt32(c2h))
                .encode(type: .c2hData, flags: flags, dataOffset: digests.dataOffset(headerLength: 24),
                        pduLength: digests.pduLength(headerLength: 24, dataLength: c2h), into: hdr)
            if digests.header { hdr.put32(CRC32C.checksum(hdr, 24), 24) }
            if digests.data { hdr.put32(CRC32C.checksum(s.pointee.data!, c2h), 96) }
        }
        if !s.pointee.skipResponse {
            let r = hdr + 32
            PDUHeader(type: .capsuleResponse, flags: digests.header ? PDUFlags.headerDigest : 0, length: 24 + hd).encode(into: r)
            CompletionQueueEntry(commandID: sqe.commandID, status: c.status, dw0: c.dw0, dw1: c.dw1,
                                 sqHead: sqFlowControlDisabled ? 0xFFFF : sqHead, sqID: queueID).encode(into: r + 8)
            if digests.header { r.put32(CRC32C.checksum(r, 24), 24) }
        }
        s.pointee.state = .responding
        enqueue(Int32(i))
    }

    private func sendR2T(_ i: Int) {
        let s = slots[i]
        s.pointee.r2tAtMs = reactor.nowMs
        let r = slots.header(i) + 64
        DataTransferHeader(commandID: s.pointee.sqe.commandID, transferTag: UInt16(i), offset: 0, length: UInt32(s.pointee.dataLength))
            .encode(type: .r2t, flags: digests.header ? PDUFlags.headerDigest : 0, dataOffset: 0,
                    pduLength: 24 + digests.headerDigestLength, into: r)
        if digests.header { r.put32(CRC32C.checksum(r, 24), 24) }
        enqueue(Int32(i) | Self.r2tFlag)
    }

    /// A host that gives up on its Asynchronous Event Requests without telling the target
    /// (SPDK's host does when it detaches or resets a controller: it completes them itself)
    /// reuses their command IDs. The held AER is then dropped without a completion and the new
    /// command takes its ID; any other command still in flight keeps its ID (Command ID
    /// Conflict). Returns true if a held AER with `commandID` was dropped.
    private func abandonHeldAsyncEvent(commandID: UInt16) -> Bool {
        guard isAdminQueue, let ctrl = controller else { return false }
        for k in 0..<slots.count where slots[k].pointee.state == .held && slots[k].pointee.sqe.commandID == commandID {
            _ = ctrl.abandonAsyncEvent(commandID: commandID)
            logger.debug("host reused the command ID of a held AER: dropped it", metadata: ["cid": "\(commandID)", "cntlid": "\(ctrl.id)"])
            slots[k].pointee.cidTracked = false
            releaseSlot(k)
            return true
        }
        return false
    }

    /// Completes a held AER with an event.
    func completeHeldEvent(commandID: UInt16, dw0: UInt32) {
        for i in 0..<slots.count where slots[i].pointee.state == .held && slots[i].pointee.sqe.commandID == commandID {
            complete(i, CommandCompletion(status: .success, dw0: dw0))
            return
        }
    }
}

let nvme_fabrics_type_connect_raw = nvme_fabrics_type_connect.rawValue
let nvme_fabrics_type_disconnect_raw = nvme_fabrics_type_disconnect.rawValue
