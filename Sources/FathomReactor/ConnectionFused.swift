import FathomTarget
import NVMeWire

/// Fused Compare and Write: the Compare (FUSE 01b) and the Write (FUSE 10b) that follows it
/// on the same queue run as one operation: the namespace's write gate is closed, writes in
/// flight drain, the range is read and compared, and only if it matches is the Write
/// issued; then the gate opens and deferred writes everywhere resume.
extension Connection {
    /// Pairs a fused command with its other half. Returns a status to fail it with, or nil.
    func pairFused(_ i: Int) -> NVMeStatus? {
        let s = slots[i]
        let sqe = s.pointee.sqe
        switch sqe.fuse {
        case 1:
            guard sqe.opcode == IOCommand.compare else { return .invalidField }
            s.pointee.fuseRole = 1
            pendingFusedFirst = i
            return nil
        case 2:
            let f = pendingFusedFirst
            pendingFusedFirst = -1
            guard f >= 0 else { return .fusedCommandMissing }
            let first = slots[f].pointee
            guard sqe.opcode == IOCommand.write, sqe.nsid == first.sqe.nsid, sqe.startingLBA == first.sqe.startingLBA,
                  sqe.blockCountMinusOne == first.sqe.blockCountMinusOne else {
                slots[f].pointee.fuseFailure = .fusedCommandFailed
                if slots[f].pointee.fuseDataReady { complete(f, .failure(.fusedCommandFailed)) }
                return .invalidField
            }
            s.pointee.fuseRole = 2
            s.pointee.fusePartner = f
            slots[f].pointee.fusePartner = i
            return nil
        default:
            return .invalidField
        }
    }

    /// The Compare waiting for its Write will not get one.
    func failPendingFusedFirst(_ status: NVMeStatus) {
        let f = pendingFusedFirst
        guard f >= 0 else { return }
        pendingFusedFirst = -1
        slots[f].pointee.fuseFailure = status
        if slots[f].pointee.fuseDataReady { complete(f, .failure(status)) }
    }

    /// A fused command's data is in; when both halves are ready, start the pair.
    func fusedDataReady(_ i: Int) {
        let s = slots[i]
        s.pointee.fuseDataReady = true
        let first = s.pointee.fuseRole == 1 ? i : s.pointee.fusePartner
        if let failure = slots[first].pointee.fuseFailure, s.pointee.fuseRole == 1 { return complete(i, .failure(failure)) }
        let second = slots[first].pointee.fusePartner
        guard second >= 0, slots[first].pointee.fuseDataReady, slots[second].pointee.fuseDataReady else { return }
        runFused(first)
    }

    /// Closes the namespace's write gate; the compare starts once writes in flight drained.
    func runFused(_ f: Int) {
        let ns = slots[f].pointee.namespace!
        let generation = self.generation
        let reactor = self.reactor
        let closed = ns.writeGate.close { [weak self] in
            reactor.post {
                guard let self, self.generation == generation, self.state != .closing else { return }
                self.beginStorage(f)  // the Compare's read
            }
        }
        guard closed else {
            deferred.append(f)  // another fused operation holds the namespace
            return
        }
        slots[f].pointee.holdsGate = true
    }

    /// The Compare's read finished: write on a match, fail both halves otherwise.
    func fusedCompared(_ f: Int, match: Bool) {
        let w = slots[f].pointee.fusePartner
        if match {
            slots[w].pointee.storageDone = 0
            return beginStorage(w)
        }
        complete(f, .failure(.compareFailure), lba: slots[f].pointee.request.startingLBA)
        complete(w, .failure(.fusedCommandFailed))
        releaseGate(f)
    }

    /// The Write finished (successfully or not).
    func fusedWritten(_ w: Int, _ c: CommandCompletion) {
        let f = slots[w].pointee.fusePartner
        complete(w, c)
        complete(f, c.status.isSuccess ? .success : .failure(.fusedCommandFailed))
        releaseGate(f)
    }

    /// Leaves or opens the write gate this slot holds, waking deferred writes everywhere.
    func releaseGate(_ i: Int) {
        let s = slots[i]
        if s.pointee.gateEntered {
            s.pointee.gateEntered = false
            s.pointee.namespace?.writeGate.leave()
        }
        if s.pointee.holdsGate {
            s.pointee.holdsGate = false
            s.pointee.namespace?.writeGate.open()
            reactor.server?.retryDeferredEverywhere()
        }
    }

    /// Ends the connection if a command has waited longer than `timeoutMs` for the data
    /// its R2T asked for.
    func checkR2TDeadline(nowMs: Int64, timeoutMs: Int64) {
        guard state == .active, !stopReading else { return }
        for i in 0..<slots.count where slots[i].pointee.state == .receivingData && nowMs - slots[i].pointee.r2tAtMs > timeoutMs {
            fatal(TransportFault(.pduSequenceError, "no H2CData for command \(slots[i].pointee.sqe.commandID) within \(timeoutMs) ms of its R2T"),
                  header: nil, headerLength: 0)
            return
        }
    }

    /// Retries commands that found the write gate closed.
    func retryDeferred() {
        guard !deferred.isEmpty, state != .closing else { return }
        let list = deferred
        deferred.removeAll()
        for i in list where slots[i].pointee.state == .executing {
            if slots[i].pointee.fuseRole == 1 { runFused(i) } else { beginStorage(i) }
        }
    }
}
