import CLiburing
import FathomStorage
import FathomTarget
import NVMeWire
#if canImport(Glibc)
import Glibc
#endif

/// Execution of validated I/O commands on the namespace's backend, on this reactor's ring.
///
/// Read and Write are one backend operation (short transfers are resubmitted for the
/// rest). The others are small state machines over the slot: Dataset Management issues one
/// deallocate per range at once; Compare, Verify and Copy read in chunks of at most MDTS
/// into the slot's second buffer; Write Zeroes falls back from ZERO_RANGE to a punched hole
/// to writing zeros where the filesystem or device lacks the first.
extension Connection {
    /// Runs `body` with the backend of slot `i`'s namespace (for a clone namespace, this
    /// host's clone), borrowed: the slot's namespace reference keeps it alive.
    @inline(__always)
    private func withBackend<R>(_ i: Int, _ body: (BlockBackend) -> R) -> R {
        slots[i].pointee.storage!._withUnsafeGuaranteedRef { ns in
            guard let clones = ns.clones else { return body(ns.store) }
            return body(cloneBackend(clones))
        }
    }

    /// This host's clone of a clone namespace, cached for the connection (one lookup per
    /// connection and namespace, not per command).
    private func cloneBackend(_ clones: CloneSet) -> BlockBackend {
        if let c = cachedClone, c.set === clones { return c.backend }
        let b = clones.backend(for: controller!.hostNQN)
        cachedClone = (clones, b)
        return b
    }

    /// Starts one backend operation for slot `i`; inline backends finish it at once.
    @inline(__always)
    private func issue(_ i: Int, _ operation: StorageOperation) {
        slots[i].pointee.pending += 1
        var prepared: UnsafeMutablePointer<io_uring_sqe>? = nil
        let result = withBackend(i) {
            $0.prepare(operation, sqe: {
                inflight += 1
                prepared = submissions.sqe(userData(.storage, slot: i))
                return prepared!
            })
        }
        if let result {
            if result == StorageOperation.runsOnWorker { return runOnWorker(i, operation) }
            return stepFinished(i, result)
        }
        if let sqe = prepared { useFixedBuffer(i, sqe) }
    }

    /// Hands an operation that may block to a storage worker; its result arrives like a
    /// ring completion (`storageCompleted`), so closing and teardown wait for it the same way.
    private func runOnWorker(_ i: Int, _ operation: StorageOperation) {
        inflight += 1
        let backend = withBackend(i) { $0 }
        StorageWorkers.shared.submit(.init(operation, on: backend, reactor: reactor, userData: userData(.storage, slot: i)))
    }

    /// A reservation command that may change a state kept through power loss writes and syncs
    /// a file before it completes: it runs on a storage worker (one at a time per namespace),
    /// its completion left in the slot for `stepFinished`. Reports and namespaces without a
    /// state file run here at once.
    private func executeReservation(_ i: Int) {
        let s = slots[i]
        let ns = s.pointee.namespace!, ctrl = controller!, target = reactor.target, sqe = s.pointee.sqe
        let data = UnsafeMutableRawBufferPointer(start: s.pointee.data, count: s.pointee.data == nil ? 0 : s.pointee.dataLength)
        guard ns.reservations.persistencePath != nil, sqe.opcode != IOCommand.reservationReport else {
            return complete(i, ctrl.executeReservation(sqe, namespace: ns, data: data, target: target))
        }
        completeOnWorker(i, key: ObjectIdentifier(ns.reservations)) {
            ctrl.executeReservation(sqe, namespace: ns, data: data, target: target)
        }
    }

    /// Runs `work` on a storage worker (one at a time per `key`) and completes slot `i` with
    /// its result: the completion waits in the slot until the worker's `.storage` result
    /// arrives, which closing and teardown wait for like any ring operation.
    func completeOnWorker(_ i: Int, key: ObjectIdentifier, work: @escaping () -> CommandCompletion) {
        let s = slots[i]
        s.pointee.pending += 1
        inflight += 1
        StorageWorkers.shared.submit(.init(key: key, reactor: reactor, userData: userData(.storage, slot: i)) {
            s.pointee.deferredCompletion = work()
            return 0
        })
    }

    /// A backend's READ or WRITE of one of the slot's pool buffers becomes READ_FIXED /
    /// WRITE_FIXED on the buffer's registered slab: the backends stay unaware of
    /// registration, and the kernel need not pin the pages of each O_DIRECT transfer.
    @inline(__always)
    private func useFixedBuffer(_ i: Int, _ sqe: UnsafeMutablePointer<io_uring_sqe>) {
        let s = slots[i]
        let addr = UInt(fathom_sqe_addr(sqe))
        if let b = s.pointee.buffer, s.pointee.bufferFixed >= 0,
           addr >= UInt(bitPattern: b), addr < UInt(bitPattern: b) + UInt(1 << (s.pointee.bufferClass + BufferPool.minimumShift)) {
            fathom_sqe_use_fixed_buffer(sqe, UInt16(s.pointee.bufferFixed))
        } else if let a = s.pointee.aux, s.pointee.auxFixed >= 0,
                  addr >= UInt(bitPattern: a), addr < UInt(bitPattern: a) + UInt(1 << (s.pointee.auxClass + BufferPool.minimumShift)) {
            fathom_sqe_use_fixed_buffer(sqe, UInt16(s.pointee.auxFixed))
        }
    }

    func beginStorage(_ i: Int) {
        let s = slots[i]
        let r = s.pointee.request
        // Writes pass the namespace's write gate (closed only while a fused Compare and
        // Write runs); the fused pair itself holds the gate.
        if r.isWriteClass && r.operation != .flush && s.pointee.fuseRole == 0 && !s.pointee.gateEntered {
            guard s.pointee.namespace!.writeGate.enter() else {
                deferred.append(i)
                return
            }
            s.pointee.gateEntered = true
        }
        s.pointee.storageDone = 0
        s.pointee.pending = 0
        s.pointee.failure = 0
        s.pointee.step = .main
        s.pointee.cursor = 0
        s.pointee.rangeDone = 0
        switch r.operation {
        case .read, .write:
            issueTransfer(i)
        case .flush:
            issue(i, .flush)
        case .writeZeroes:
            issue(i, .writeZeroes(offset: r.offset, length: UInt64(r.length), deallocate: r.deallocate))
        case .deallocate:
            guard r.rangeCount > 0 else { return complete(i, .success) }
            let ranges = LBARanges(data: s.pointee.data!, count: r.rangeCount, copy: false, namespace: s.pointee.namespace!)
            if let status = ranges.validate(namespace: s.pointee.namespace!) { return complete(i, .failure(status)) }
            // Hold one extra count so inline completions cannot finish the command early.
            s.pointee.pending += 1
            for k in 0..<ranges.count where ranges.blocks(k).count > 0 {
                let b = ranges.bytes(k)
                issue(i, .deallocate(offset: b.offset, length: b.length))
            }
            stepFinished(i, 0)
        case .compare, .verify:
            attachAux(i, length: min(r.length, reactor.settings.maxDataTransfer))
            issueChunkRead(i, offset: r.offset)
        case .reservation:
            executeReservation(i)
        case .copy:
            let ranges = LBARanges(data: s.pointee.data!, count: r.rangeCount, copy: true, namespace: s.pointee.namespace!)
            if let status = ranges.validate(namespace: s.pointee.namespace!, copyDestinationLBA: r.startingLBA) {
                return complete(i, .failure(status))
            }
            attachAux(i, length: reactor.settings.maxDataTransfer)
            s.pointee.storageDone = 0  // bytes copied so far (destination cursor)
            nextCopyChunk(i)
        }
    }

    func storageCompleted(_ i: Int, _ result: Int32) {
        inflight -= 1
        if state == .closing {
            slots[i].pointee.pending -= 1
            if slots[i].pointee.pending <= 0 { releaseSlot(i) }
            return finishIfIdle()
        }
        if isAdminQueue {  // an admin command completed on a worker (completeElsewhere, or a Connect that opened clones)
            slots[i].pointee.pending -= 1
            return complete(i, slots[i].pointee.deferredCompletion)
        }
        stepFinished(i, result)
    }

    /// One backend operation of slot `i` finished with `result` (bytes or -errno).
    private func stepFinished(_ i: Int, _ result: Int32) {
        let s = slots[i]
        s.pointee.pending -= 1
        let r = s.pointee.request
        switch r.operation {
        case .read, .write:
            guard result >= 0 else { return fail(i, result) }
            var done = s.pointee.storageDone + Int(result)
            if result == 0 {
                guard r.operation == .read else { return fail(i, -EIO) }
                // Past the end of a file shorter than the namespace: a hole, reads as zeros.
                (s.pointee.data! + done).initializeMemory(as: UInt8.self, repeating: 0, count: r.length - done)
                done = r.length
            }
            s.pointee.storageDone = done
            if done < r.length { return issueTransfer(i) }
            withController { $0.account(read: r.operation == .read, bytes: r.length) }
            if s.pointee.fuseRole == 2 { return fusedWritten(i, .success) }
            complete(i, CommandCompletion(status: .success, dataLength: r.operation == .read ? r.length : 0))
        case .flush:
            result < 0 ? fail(i, result) : complete(i, .success)
        case .writeZeroes:
            writeZeroesStep(i, result)
        case .deallocate:
            // Deallocation is advisory: a backend that cannot (EOPNOTSUPP) is not an error.
            if result < 0 && result != -EOPNOTSUPP && s.pointee.failure == 0 { s.pointee.failure = result }
            guard s.pointee.pending == 0 else { return }
            s.pointee.failure < 0 ? fail(i, s.pointee.failure) : complete(i, .success)
        case .compare, .verify:
            guard let read = chunkRead(i, result) else { return }
            if read < s.pointee.chunkLength { return }  // rest of the chunk was reissued
            if r.operation == .compare {
                let same = memcmp(s.pointee.aux!, s.pointee.data!, r.length) == 0
                if s.pointee.fuseRole == 1 { return fusedCompared(i, match: same) }
                return complete(i, same ? .success : .failure(.compareFailure), lba: r.startingLBA)
            }
            s.pointee.rangeDone += UInt64(s.pointee.chunkLength)
            if s.pointee.rangeDone < UInt64(r.length) { return issueChunkRead(i, offset: r.offset + s.pointee.rangeDone) }
            complete(i, .success)
        case .copy:
            copyStep(i, result)
        case .reservation:
            complete(i, s.pointee.deferredCompletion)  // run on a storage worker
        }
    }

    private func fail(_ i: Int, _ result: Int32) {
        let s = slots[i]
        let r = s.pointee.request
        if s.pointee.fuseRole != 0 {
            let f = s.pointee.fuseRole == 1 ? i : s.pointee.fusePartner
            let w = slots[f].pointee.fusePartner
            let status = Self.status(forErrno: -result, read: s.pointee.fuseRole == 1)
            complete(i, .failure(status), lba: r.startingLBA)
            complete(i == f ? w : f, .failure(.fusedCommandFailed))
            return releaseGate(f)
        }
        let status = Self.status(forErrno: -result, read: r.operation == .read || r.operation == .verify || r.operation == .compare)
        logger.error("backend I/O failed", metadata: ["namespace": "\(s.pointee.namespace!.label)", "errno": "\(-result)",
                                                      "op": "\(r.operation)", "offset": "\(r.offset)"])
        complete(i, .failure(status), lba: r.startingLBA)
    }

    static func status(forErrno e: Int32, read: Bool) -> NVMeStatus {
        switch e {
        case ENOSPC, EDQUOT: return .capacityExceeded
        case EROFS, EPERM, EACCES: return .namespaceWriteProtected
        case EIO, ENXIO, ENODEV: return read ? .unrecoveredReadError : .writeFault
        default: return .internalError
        }
    }

    // MARK: Read / Write

    private func issueTransfer(_ i: Int) {
        let s = slots[i]
        let r = s.pointee.request
        let done = s.pointee.storageDone
        if r.operation == .read {
            // Memory and null namespaces: the data goes from the backend's memory to the
            // socket, one copy instead of two (the command buffer stays unused).
            if done == 0, let p = withBackend(i, { $0.readInPlace(offset: r.offset, length: r.length) }) {
                s.pointee.data = p
                s.pointee.pending += 1
                return stepFinished(i, Int32(r.length))
            }
            issue(i, .read(buffer: s.pointee.data! + done, length: r.length - done, offset: r.offset + UInt64(done)))
        } else {
            issue(i, .write(buffer: s.pointee.data! + done, length: r.length - done, offset: r.offset + UInt64(done),
                            forceUnitAccess: r.forceUnitAccess))
        }
    }

    // MARK: Write Zeroes

    private func writeZeroesStep(_ i: Int, _ result: Int32) {
        let s = slots[i]
        let r = s.pointee.request
        let unsupported = result == -EOPNOTSUPP || result == -EINVAL || result == -ENOTTY
        switch s.pointee.step {
        case .main where unsupported:
            s.pointee.step = .punchHole
            return issue(i, .deallocate(offset: r.offset, length: UInt64(r.length)))
        case .punchHole where unsupported || (result >= 0 && !withBackend(i, { $0.deallocatedReadsZero })):
            s.pointee.step = .zeroWrites
            attachAux(i, length: min(r.length, reactor.settings.maxDataTransfer))
            s.pointee.aux!.initializeMemory(as: UInt8.self, repeating: 0, count: s.pointee.auxLength)
            s.pointee.rangeDone = 0
            return issueZeroWrite(i)
        case .zeroWrites where result > 0:
            s.pointee.rangeDone += UInt64(result)
            if s.pointee.rangeDone < UInt64(r.length) { return issueZeroWrite(i) }
        case .durable:
            break
        default:
            break
        }
        guard result >= 0 else { return fail(i, result) }
        if r.forceUnitAccess && s.pointee.step != .durable {
            s.pointee.step = .durable
            return issue(i, .flush)
        }
        complete(i, .success)
    }

    private func issueZeroWrite(_ i: Int) {
        let s = slots[i]
        let r = s.pointee.request
        let n = min(s.pointee.auxLength, r.length - Int(s.pointee.rangeDone))
        issue(i, .write(buffer: s.pointee.aux!, length: n, offset: r.offset + s.pointee.rangeDone, forceUnitAccess: false))
    }

    // MARK: Chunked reads (Compare, Verify, Copy)

    private func attachAux(_ i: Int, length: Int) {
        let s = slots[i]
        if s.pointee.aux == nil {
            let (p, cls) = withPool { $0.take(length) }
            s.pointee.aux = p.pointer
            s.pointee.auxFixed = p.fixedIndex
            s.pointee.auxClass = cls
        }
        s.pointee.auxLength = length
    }

    /// Reads the next chunk (up to the aux buffer's size) of the command's range at `offset`.
    private func issueChunkRead(_ i: Int, offset: UInt64) {
        let s = slots[i]
        let remaining = s.pointee.request.operation == .copy
            ? Int(LBARanges(data: s.pointee.data!, count: s.pointee.request.rangeCount, copy: true,
                            namespace: s.pointee.namespace!).bytes(s.pointee.cursor).length - s.pointee.rangeDone)
            : s.pointee.request.length - Int(s.pointee.rangeDone)
        s.pointee.chunkLength = min(s.pointee.auxLength, remaining)
        s.pointee.chunkDone = 0
        issue(i, .read(buffer: s.pointee.aux!, length: s.pointee.chunkLength, offset: offset))
    }

    /// Accounts a chunk read; reissues the rest of a short read. Returns bytes of the chunk
    /// read so far, or nil when the command has failed.
    private func chunkRead(_ i: Int, _ result: Int32) -> Int? {
        let s = slots[i]
        guard result >= 0 else {
            fail(i, result)
            return nil
        }
        let want = s.pointee.chunkLength
        if result == 0 {
            (s.pointee.aux! + s.pointee.chunkDone).initializeMemory(as: UInt8.self, repeating: 0, count: want - s.pointee.chunkDone)
            s.pointee.chunkDone = want
        } else {
            s.pointee.chunkDone += Int(result)
        }
        if s.pointee.chunkDone < want {
            let base = chunkBaseOffset(i)
            issue(i, .read(buffer: s.pointee.aux! + s.pointee.chunkDone, length: want - s.pointee.chunkDone,
                           offset: base + UInt64(s.pointee.chunkDone)))
        }
        return s.pointee.chunkDone
    }

    /// Namespace byte offset where the current chunk starts.
    private func chunkBaseOffset(_ i: Int) -> UInt64 {
        let s = slots[i]
        if s.pointee.request.operation == .copy {
            let ranges = LBARanges(data: s.pointee.data!, count: s.pointee.request.rangeCount, copy: true, namespace: s.pointee.namespace!)
            return ranges.bytes(s.pointee.cursor).offset + s.pointee.rangeDone
        }
        return s.pointee.request.offset + s.pointee.rangeDone
    }

    // MARK: Copy

    /// Reads the next chunk of the current source range, skipping finished ranges.
    private func nextCopyChunk(_ i: Int) {
        let s = slots[i]
        let r = s.pointee.request
        let ranges = LBARanges(data: s.pointee.data!, count: r.rangeCount, copy: true, namespace: s.pointee.namespace!)
        while s.pointee.cursor < ranges.count && s.pointee.rangeDone >= ranges.bytes(s.pointee.cursor).length {
            s.pointee.cursor += 1
            s.pointee.rangeDone = 0
        }
        guard s.pointee.cursor < ranges.count else {
            if r.forceUnitAccess {
                s.pointee.step = .durable
                return issue(i, .flush)
            }
            return complete(i, .success)
        }
        s.pointee.step = .copyRead
        issueChunkRead(i, offset: ranges.bytes(s.pointee.cursor).offset + s.pointee.rangeDone)
    }

    private func copyStep(_ i: Int, _ result: Int32) {
        let s = slots[i]
        switch s.pointee.step {
        case .copyRead:
            guard let read = chunkRead(i, result) else { return }
            if read < s.pointee.chunkLength { return }
            s.pointee.step = .copyWrite
            s.pointee.chunkDone = 0
            issue(i, .write(buffer: s.pointee.aux!, length: s.pointee.chunkLength,
                            offset: s.pointee.request.destination + UInt64(s.pointee.storageDone), forceUnitAccess: false))
        case .copyWrite:
            guard result > 0 else { return fail(i, result == 0 ? -EIO : result) }
            s.pointee.chunkDone += Int(result)
            if s.pointee.chunkDone < s.pointee.chunkLength {
                let done = s.pointee.chunkDone
                return issue(i, .write(buffer: s.pointee.aux! + done, length: s.pointee.chunkLength - done,
                                       offset: s.pointee.request.destination + UInt64(s.pointee.storageDone + done), forceUnitAccess: false))
            }
            s.pointee.storageDone += s.pointee.chunkLength
            s.pointee.rangeDone += UInt64(s.pointee.chunkLength)
            nextCopyChunk(i)
        default:
            result < 0 ? fail(i, result) : complete(i, .success)
        }
    }
}
