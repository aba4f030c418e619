import Histogram
import CLiburing
import NVMeWire
#if canImport(Glibc)
import Glibc
#endif

/// Drives one NVMe/TCP I/O queue at a fixed queue depth from one thread, in the style of
/// spdk_nvme_perf: every completion immediately issues the next command, capsules for all
/// completions of one receive go out in one send, and the receive side parses as many
/// PDUs as one recv brought. Only NVMeWire's codecs are used on the hot path; the
/// queue was set up (ICReq, Connect) by NVMeInitiator.
final class PerfWorker {
    let fd: Int32
    var workload: Workload
    let inCapsuleLimit: Int
    let maxH2CData: Int
    var random: FastRandom
    var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
    private(set) var completed: UInt64 = 0
    private(set) var bytes: UInt64 = 0
    private(set) var errors: UInt64 = 0
    private(set) var verifyFailures: UInt64 = 0
    private(set) var errorText = ""
    let tag: UInt64

    private let recvCapacity: Int
    private let recvBuffer: UnsafeMutableRawPointer
    private var sendBuffer: [UInt8] = []
    private let writeData: UnsafeMutableRawPointer
    private var startNs: [UInt64]
    private var lbaOf: [UInt64]
    private var isWrite: [Bool]
    private var sequential: UInt64 = 0
    private var outstanding = 0
    private var stopping = false
    private var issueLimit = Int.max
    private var issued = 0
    /// Data of the C2HData being collected per command (for verification).
    private var readProgress: [Int]

    init(fd: Int32, workload: Workload, inCapsuleLimit: Int, maxH2CData: Int, seed: UInt64, tag: UInt64) {
        self.fd = fd
        self.workload = workload
        self.inCapsuleLimit = inCapsuleLimit
        self.maxH2CData = maxH2CData
        self.random = FastRandom(seed: seed)
        self.tag = tag
        recvCapacity = max(1 << 20, 4 * (workload.ioSize + 256))
        recvBuffer = .allocate(byteCount: recvCapacity, alignment: 64)
        writeData = .allocate(byteCount: workload.ioSize, alignment: 4096)
        // Random bytes, made once, the same in every write (what fio writes with
        // --scramble_buffers=0, as benchmark.sh runs it): storage that compresses or spots
        // repeated pages (zram, some SSDs) must not be handed an easier write than fio's.
        var fill = FastRandom(seed: seed ^ 0x9E37_79B9_7F4A_7C15)
        for word in 0..<(workload.ioSize / 8) { writeData.storeBytes(of: fill.next(), toByteOffset: word * 8, as: UInt64.self) }
        writeData.advanced(by: workload.ioSize & ~7).initializeMemory(as: UInt8.self, repeating: 0x5A, count: workload.ioSize & 7)
        startNs = Array(repeating: 0, count: workload.queueDepth + 1)
        lbaOf = Array(repeating: 0, count: workload.queueDepth + 1)
        isWrite = Array(repeating: false, count: workload.queueDepth + 1)
        readProgress = Array(repeating: 0, count: workload.queueDepth + 1)
        sendBuffer.reserveCapacity(workload.queueDepth * (80 + min(workload.ioSize, inCapsuleLimit)))
        sequential = (UInt64(seed) % workload.slots)
    }

    deinit {
        recvBuffer.deallocate()
        writeData.deallocate()
    }

    @inline(__always)
    static func nowNs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Runs until `durationNs` has passed, then drains what is outstanding.
    func run(durationNs: UInt64, warmupNs: UInt64) {
        let start = Self.nowNs()
        let measureFrom = start + warmupNs
        let end = measureFrom + durationNs
        for cid in 1...min(workload.queueDepth, issueLimit) { issue(UInt16(cid)) }
        flush()
        var filled = 0
        var measuring = warmupNs == 0
        while outstanding > 0 {
            let n = recv(fd, recvBuffer + filled, recvCapacity - filled, 0)
            if n <= 0 {
                if n < 0 && errno == EINTR { continue }
                errorText = n == 0 ? "target closed the connection" : "recv: \(String(cString: strerror(errno)))"
                errors += 1
                return
            }
            filled += n
            let now = Self.nowNs()
            if !measuring && now >= measureFrom {
                measuring = true
                histogram.reset()
                completed = 0
                bytes = 0
            }
            if now >= end { stopping = true }
            var at = 0
            while filled - at >= 8 {
                let p = UnsafeRawPointer(recvBuffer + at)
                let plen = Int(p.le32(4))
                guard plen >= 8, plen <= recvCapacity else {
                    errorText = "bad PDU length \(plen)"
                    errors += 1
                    return
                }
                if filled - at < plen { break }
                handle(p, plen: plen, now: now)
                at += plen
            }
            if at > 0 && at < filled { memmove(recvBuffer, recvBuffer + at, filled - at) }
            filled -= at
            flush()
            if errors > 0 && !errorText.isEmpty && workload.verify { return }
        }
    }

    /// Issues exactly `count` commands (a fill pass), then returns.
    func runCount(_ count: Int) {
        issueLimit = count
        run(durationNs: UInt64.max / 4, warmupNs: 0)
    }

    @inline(__always)
    private func handle(_ p: UnsafeRawPointer, plen: Int, now: UInt64) {
        switch p.le8(0) {
        case PDUType.capsuleResponse.rawValue:
            let cqe = CompletionQueueEntry(decoding: p + 8)
            if !cqe.status.isSuccess {
                errors += 1
                if errorText.isEmpty { errorText = "command failed: \(cqe.status)" }
            }
            finish(cqe.commandID, now: now)
        case PDUType.c2hData.rawValue:
            let h = DataTransferHeader(decoding: p)
            let cid = Int(h.commandID)
            if workload.verify, cid <= workload.queueDepth {
                let data = p + Int(p.le8(3))
                let blockOffset = Int(h.offset) / workload.blockSize
                if !VerifyPattern.check(data, lba: lbaOf[cid] + UInt64(blockOffset), blocks: Int(h.length) / workload.blockSize,
                                        blockSize: workload.blockSize, tag: tag) {
                    verifyFailures += 1
                    if errorText.isEmpty { errorText = "verify failed at LBA \(lbaOf[cid] + UInt64(blockOffset))" }
                }
            }
            if p.le8(1) & PDUFlags.success != 0 { finish(h.commandID, now: now) }
        case PDUType.r2t.rawValue:
            let h = DataTransferHeader(decoding: p)
            sendH2C(cid: h.commandID, tag: h.transferTag, offset: Int(h.offset), length: Int(h.length))
        case PDUType.c2hTermReq.rawValue:
            errors += 1
            errorText = "target sent C2HTermReq (FES \(p.le16(8)))"
            outstanding = 0
        default:
            errors += 1
            errorText = "unexpected PDU type \(p.le8(0))"
        }
    }

    @inline(__always)
    private func finish(_ cid: UInt16, now: UInt64) {
        let c = Int(cid)
        guard c >= 1, c <= workload.queueDepth else { return }
        _ = histogram.record(now - startNs[c])
        completed += 1
        bytes += UInt64(workload.ioSize)
        outstanding -= 1
        if !stopping && issued < issueLimit { issue(cid) }
    }

    private func nextLBA() -> UInt64 {
        let slot: UInt64
        switch workload.pattern {
        case .read, .write:
            slot = sequential
            sequential = (sequential + 1) % workload.slots
        default:
            slot = random.next() % workload.slots
        }
        return slot * UInt64(workload.blocksPerIO)
    }

    /// Appends the capsule for a new command `cid` to the send buffer.
    private func issue(_ cid: UInt16) {
        let c = Int(cid)
        let write: Bool
        switch workload.pattern {
        case .read, .randread: write = false
        case .write, .randwrite: write = true
        case .randrw: write = Int(random.next() % 100) >= workload.readPercent
        }
        let lba = nextLBA()
        lbaOf[c] = lba
        isWrite[c] = write
        let n = workload.blocksPerIO
        var sqe = SubmissionQueueEntry(opcode: write ? 0x01 : 0x02, commandID: cid, nsid: workload.nsid,
                                       cdw10: UInt32(truncatingIfNeeded: lba), cdw11: UInt32(truncatingIfNeeded: lba >> 32),
                                       cdw12: UInt32(n - 1))
        let inCapsule = write && workload.ioSize <= inCapsuleLimit
        sqe.sgl = inCapsule ? .inCapsule(length: workload.ioSize) : .transport(length: workload.ioSize)
        if write && workload.verify {
            VerifyPattern.fill(writeData, lba: lba, blocks: n, blockSize: workload.blockSize, tag: tag)
        }
        let dataLength = inCapsule ? workload.ioSize : 0
        let start = sendBuffer.count
        sendBuffer.append(contentsOf: repeatElement(0, count: 72 + dataLength))
        sendBuffer.withUnsafeMutableBytes { b in
            let p = b.baseAddress! + start
            PDUHeader(type: .capsuleCommand, dataOffset: dataLength > 0 ? 72 : 0, length: 72 + dataLength).encode(into: p)
            sqe.encode(into: p + 8)
            if dataLength > 0 { (p + 72).copyMemory(from: writeData, byteCount: dataLength) }
        }
        startNs[c] = Self.nowNs()
        outstanding += 1
        issued += 1
    }

    /// Answers an R2T with H2CData PDUs of at most MAXH2CDATA.
    private func sendH2C(cid: UInt16, tag transferTag: UInt16, offset: Int, length: Int) {
        let c = Int(cid)
        if workload.verify {
            VerifyPattern.fill(writeData, lba: lbaOf[c], blocks: workload.blocksPerIO, blockSize: workload.blockSize, tag: tag)
        }
        var at = offset
        while at < offset + length {
            let n = min(maxH2CData, offset + length - at)
            let start = sendBuffer.count
            sendBuffer.append(contentsOf: repeatElement(0, count: 24 + n))
            sendBuffer.withUnsafeMutableBytes { b in
                let p = b.baseAddress! + start
                DataTransferHeader(commandID: cid, transferTag: transferTag, offset: UInt32(at), length: UInt32(n))
                    .encode(type: .h2cData, flags: at + n == offset + length ? PDUFlags.lastPDU : 0, dataOffset: 24,
                            pduLength: 24 + n, into: p)
                (p + 24).copyMemory(from: writeData + at, byteCount: n)
            }
            at += n
        }
    }

    /// Sends everything queued (blocking until the socket took it all).
    private func flush() {
        guard !sendBuffer.isEmpty else { return }
        sendBuffer.withUnsafeBytes { b in
            var sent = 0
            while sent < b.count {
                let n = send(fd, b.baseAddress! + sent, b.count - sent, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    errors += 1
                    errorText = "send: \(String(cString: strerror(errno)))"
                    outstanding = 0
                    return
                }
                sent += n
            }
        }
        sendBuffer.removeAll(keepingCapacity: true)
    }
}
