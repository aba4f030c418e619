import FathomReactor
import FathomTarget
import NVMeInitiator
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Both ways of reading a socket (`ReceiveMode`) carry every PDU intact: cut at any offset
/// (headers, in-capsule data and digests split across reads, and so across the multishot
/// recv's provided buffers), large write payloads received straight into command buffers
/// (the multishot recv cancelled and armed again around them), a buffer ring run dry by a
/// burst of pipelined writes, and hosts that vanish or misbehave mid-stream.
final class ReceiveModeTests: XCTestCase {
    private func harness(_ mode: ReceiveMode) throws -> TargetHarness {
        var settings = TargetSettings()
        settings.receiveMode = mode
        return try TargetHarness(sizeMiB: 64, settings: settings, reactors: 1)
    }

    /// Pieces that cut the 72-byte capsule header, its digest, 4 KiB + header in-capsule
    /// PDUs and the 4 KiB provided buffers at many different offsets.
    private static let cuts = [1, 5, 71, 73, 3, 8191, 8193, 4100, 2, 256, 257, 9000, 24, 4, 12_345, 77]

    private func writesAndReadsCutAnywhere(_ mode: ReceiveMode, digests: Bool) throws {
        let h = try harness(mode)
        defer { h.stop() }
        let c = try h.controller(queues: 1, headerDigest: digests, dataDigest: digests)
        let q = c.ioQueues[0]
        q.socket.fragmentation = (Self.cuts, 100)
        // In-capsule writes (up to 16 KiB) and R2T writes (64 and 256 KiB), pipelined.
        let sizes = [512, 4096, 8192, 16_384, 65_536, 262_144, 1024, 12_288]
        var expected: [(lba: UInt64, data: [UInt8])] = []
        var cids: [UInt16] = []
        for (k, size) in sizes.enumerated() {
            let data = pattern(size, seed: UInt64(100 + k))
            let lba = UInt64(k) * 1024
            cids.append(try q.submit(HostController.writeCommand(nsid: 1, lba: lba, blocks: size / 512), write: data))
            expected.append((lba, data))
        }
        for cid in cids { XCTAssertTrue(try q.wait(cid).status.isSuccess, "\(mode) write") }
        // Reads pipelined, their capsules cut just the same, every byte checked: enough of
        // them that the multishot recv, left while the writes' data flowed, is armed again.
        for round in 0..<2 {
            var reads: [UInt16: Int] = [:]
            for n in 0..<60 {
                let k = (n + round) % expected.count, e = expected[k]
                reads[try q.submit(HostController.readCommand(nsid: 1, lba: e.lba, blocks: e.data.count / 512), readLength: e.data.count)] = k
            }
            for (cid, k) in reads {
                let r = try q.wait(cid)
                XCTAssertTrue(r.status.isSuccess)
                XCTAssertEqual(r.data, expected[k].data, "\(mode) digests \(digests) size \(expected[k].data.count)")
            }
        }
        let counts = h.server.multishotReceiveCounts
        if mode == .multishot {
            XCTAssertEqual(counts.connections, 2, "admin and I/O queue each with a buffer ring")
            XCTAssertGreaterThan(counts.leftForData, 0, "the writes did not make the connection leave multishot recv")
            XCTAssertGreaterThan(counts.arms, counts.connections, "the multishot recv was not armed again for the reads")
        } else {
            XCTAssertEqual(counts.connections, 0)
            XCTAssertEqual(counts.arms, 0)
        }
    }

    func testMultishotCarriesPDUsCutAnywhere() throws {
        try writesAndReadsCutAnywhere(.multishot, digests: false)
        try writesAndReadsCutAnywhere(.multishot, digests: true)
    }

    func testSingleRecvCarriesPDUsCutAnywhere() throws {
        try writesAndReadsCutAnywhere(.single, digests: false)
        try writesAndReadsCutAnywhere(.single, digests: true)
    }

    /// Write data makes a connection leave multishot recv (R2T data straight into command
    /// buffers) and reads bring it back; a burst of in-capsule writes sent while it is armed
    /// empties the buffer ring before the cancellation takes effect: the bytes already in the
    /// ring's buffers are parsed first, in order, and the connection carries on.
    func testWriteDataLeavesMultishotAndARingRunsDry() throws {
        let h = try harness(.multishot)
        defer { h.stop() }
        let c = try h.controller(queues: 2)
        var expected: [UInt64: [UInt8]] = [:]
        var cids: [(Int, UInt16)] = []
        for k in 0..<24 {
            let size = [131_072, 524_288, 65_536][k % 3]
            let data = pattern(size, seed: UInt64(200 + k))
            let lba = UInt64(k) * 1024
            expected[lba] = data
            cids.append((k % 2, try c.ioQueues[k % 2].submit(HostController.writeCommand(nsid: 1, lba: lba, blocks: size / 512), write: data)))
        }
        for (q, cid) in cids { XCTAssertTrue(try c.ioQueues[q].wait(cid).status.isSuccess) }
        XCTAssertGreaterThanOrEqual(h.server.multishotReceiveCounts.leftForData, 2, "both queues left multishot recv for the R2T data")
        for (lba, data) in expected { XCTAssertEqual(try c.read(lba: lba, blocks: data.count / 512), data) }

        // Reads only: queue 0 arms its multishot recv again.
        let q = c.ioQueues[0]
        let armsBefore = h.server.multishotReceiveCounts.arms
        for _ in 0..<40 { XCTAssertEqual(try c.read(lba: 0, blocks: 1), Array(expected[0]![0..<512])) }
        XCTAssertGreaterThan(h.server.multishotReceiveCounts.arms, armsBefore)

        // 120 in-capsule writes of 16 KiB (about 2 MiB) in one send: far more than the ring's 16 KiB.
        var burst: [UInt8] = []
        var burstData: [[UInt8]] = []
        for k in 0..<120 {
            let data = pattern(16_384, seed: UInt64(300 + k))
            burstData.append(data)
            var sqe = HostController.writeCommand(nsid: 1, lba: 30_000 + UInt64(k) * 32, blocks: 32)
            sqe.commandID = UInt16(2000 + k)
            sqe.sgl = .inCapsule(length: data.count)
            burst += q.capsulePDU(sqe, data: data)
        }
        try q.socket.send(burst)
        let statuses = try waitCompletions(q, cids: Set((0..<120).map { UInt16(2000 + $0) }))
        XCTAssertTrue(statuses.values.allSatisfy(\.isSuccess), "burst writes")
        XCTAssertGreaterThan(h.server.multishotReceiveCounts.ranDry, 0, "the buffer ring never ran dry")
        for k in 0..<120 {
            XCTAssertEqual(try c.read(queue: 1, lba: 30_000 + UInt64(k) * 32, blocks: 32), burstData[k], "burst write \(k)")
        }
    }

    /// A host that vanishes with payloads half sent, and one that breaks the protocol in the
    /// middle of a stream: each ends only its own connection, and the buffer rings of closed
    /// connections are given back (a new connection reuses the index, and so the group ID).
    func testHostsVanishingMidPayloadEndOnlyThemselves() throws {
        let h = try harness(.multishot)
        defer { h.stop() }
        let steady = try h.controller(queues: 1)
        let keep = pattern(8192, seed: 7)
        try steady.write(lba: 50_000, data: keep)
        for round in 0..<6 {
            let c = try h.controller(queues: 1)
            let q = c.ioQueues[0]
            // Half of a 256 KiB write's H2CData, or half of an in-capsule write, then gone.
            var sqe = HostController.writeCommand(nsid: 1, lba: 0, blocks: 32)
            sqe.commandID = 77
            sqe.sgl = .inCapsule(length: 16_384)
            let bytes = q.capsulePDU(sqe, data: pattern(16_384, seed: 1))
            try q.socket.send(Array(bytes[0..<(round % 2 == 0 ? 9000 : 100)]))
            if round % 3 == 2 {
                // Garbage where the rest of the stream should be: a transport error, then closed.
                try q.socket.send([UInt8](repeating: 0xEE, count: 20_000))
                XCTAssertTrue(q.socket.waitForClose(seconds: 5))
            }
            shutdown(q.socket.fd, Int32(SHUT_RDWR))
            XCTAssertEqual(try steady.read(lba: 50_000, blocks: 16), keep, "round \(round)")
        }
        let late = try h.controller(queues: 2)
        let data = pattern(262_144, seed: 9)
        try late.write(queue: 1, lba: 4096, data: data)
        XCTAssertEqual(try late.read(queue: 0, lba: 4096, blocks: 512), data)
        // Every connection had its ring (2 + 6 × 2 + 3): closed ones gave their group IDs back.
        XCTAssertEqual(h.server.multishotReceiveCounts.connections, 17)
    }

    // MARK: Helpers

    /// Reads response capsules (of commands sent around QueuePair) until all of `cids` are in.
    private func waitCompletions(_ q: QueuePair, cids: Set<UInt16>) throws -> [UInt16: NVMeStatus] {
        var statuses: [UInt16: NVMeStatus] = [:]
        while statuses.count < cids.count {
            let common = try q.socket.receive(8)
            let ch = common.withUnsafeBytes { PDUHeader(decoding: $0.baseAddress!) }
            let rest = try q.socket.receive(Int(ch.length) - 8)
            guard ch.type == .capsuleResponse else { continue }
            let cqe = (common + rest).withUnsafeBytes { CompletionQueueEntry(decoding: $0.baseAddress! + 8) }
            if cids.contains(cqe.commandID) { statuses[cqe.commandID] = cqe.status }
        }
        return statuses
    }
}
