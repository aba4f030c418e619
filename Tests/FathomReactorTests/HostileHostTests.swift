import FathomTarget
import NVMeInitiator
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Hosts that hold resources: reused command IDs, R2Ts never answered, too many connections.
final class HostileHostTests: XCTestCase {
    var harness: TargetHarness!

    override func tearDown() { harness?.stop() }

    /// Sends a Write whose data must be asked for with an R2T, reads the R2T and returns its tag.
    private func sendWriteAwaitingData(_ q: QueuePair, commandID: UInt16, blocks: Int) throws -> UInt16 {
        var w = HostController.writeCommand(nsid: 1, lba: 0, blocks: blocks)
        w.commandID = commandID
        w.sgl = .transport(length: blocks * 512)
        try q.sendCapsule(w, data: [])
        let r2t = try q.socket.receive(24)
        XCTAssertEqual(r2t[0], PDUType.r2t.rawValue)
        return r2t.withUnsafeBytes { DataTransferHeader(decoding: $0.baseAddress!).transferTag }
    }

    func testCommandIDReuseWhileInFlightIsAConflict() throws {
        harness = try TargetHarness()
        let c = try harness.controller(queues: 1)
        let q = c.ioQueues[0]
        // A write waiting for its data (its R2T sent) is in flight: its CID is taken.
        let tag = try sendWriteAwaitingData(q, commandID: 700, blocks: 8)
        try q.sendCapsule(SubmissionQueueEntry(opcode: 0x00, commandID: 700, nsid: 1), data: [])
        let resp = try q.socket.receive(24)
        let cqe = resp.withUnsafeBytes { CompletionQueueEntry(decoding: $0.baseAddress! + 8) }
        XCTAssertEqual(cqe.commandID, 700)
        XCTAssertEqual(cqe.status, .commandIDConflict)
        // The write lives on and completes with its data.
        let data = pattern(4096, seed: 70)
        try q.sendH2CData(cid: 700, tag: tag, data: data, offset: 0, length: 4096)
        let done = try q.socket.receive(24)
        XCTAssertTrue(done.withUnsafeBytes { CompletionQueueEntry(decoding: $0.baseAddress! + 8) }.status.isSuccess)
        XCTAssertEqual(try c.read(lba: 0, blocks: 8), data)
        // Once completed, the ID is free again.
        XCTAssertTrue(try q.execute(SubmissionQueueEntry(opcode: 0x00, commandID: 700, nsid: 1)).status.isSuccess)
    }

    /// SPDK's host completes its own AERs when it detaches and then reuses their command IDs
    /// (its shutdown reads CC with one). The held AER is dropped, the new command runs.
    func testReusingAHeldAERsCommandIDAbandonsTheAER() throws {
        harness = try TargetHarness()
        let c = try harness.controller(queues: 0)
        _ = try c.admin.submit(SubmissionQueueEntry(opcode: 0x0C, commandID: 700))
        let get = try c.admin.execute(SubmissionQueueEntry(opcode: 0x7F, commandID: 700, nsid: 0x04 /* Property Get */, cdw10: 0, cdw11: 0x14))
        XCTAssertTrue(get.status.isSuccess, "\(get.status)")
        XCTAssertEqual(get.cqe.dw0 & 1, 1, "CC.EN read back")
        // Nothing of the AER is left: Abort finds no command 700.
        XCTAssertEqual(try c.admin.execute(SubmissionQueueEntry(opcode: 0x08, commandID: 0, cdw10: UInt32(700) << 16)).cqe.dw0 & 1, 1)
        // A new AER gets the next event as usual.
        XCTAssertTrue(try c.setFeature(0x0B, 1 << 8).status.isSuccess)
        let aer = try c.admin.submit(SubmissionQueueEntry(opcode: 0x0C, commandID: 701))
        try c.keepAlive()
        XCTAssertFalse(c.admin.hasCompleted(aer))
    }

    func testUnansweredR2TEndsTheConnectionOnADeadline() throws {
        var settings = TargetSettings()
        settings.r2tTimeoutMs = 1000
        harness = try TargetHarness(settings: settings)
        let c = try harness.controller(queues: 1)
        let q = c.ioQueues[0]
        // A write that needs an R2T, whose data never comes.
        _ = try sendWriteAwaitingData(q, commandID: 5, blocks: 64)
        let term = try q.socket.receive(24)
        XCTAssertEqual(term[0], PDUType.c2hTermReq.rawValue, "ended within the deadline plus a tick")
        XCTAssertTrue(q.socket.waitForClose(seconds: 5))
        // The controller and its admin queue are unaffected.
        try c.keepAlive()
    }

    func testConnectionLimit() throws {
        var settings = TargetSettings()
        settings.maxConnections = 3
        harness = try TargetHarness(settings: settings)
        var held = try (0..<3).map { _ in try QueuePair(host: "127.0.0.1", port: harness.port, queueID: 0) }
        let extra = try TCPSocket(host: "127.0.0.1", port: harness.port)
        XCTAssertTrue(extra.waitForClose(seconds: 3), "the fourth connection is closed at accept")
        // Closing one makes room again.
        held.removeLast()
        XCTAssertTrue(harness.eventually { (try? QueuePair(host: "127.0.0.1", port: self.harness.port, queueID: 0)) != nil })
        XCTAssertEqual(held.count, 2)
    }

    /// Slowloris: a command header trickled and never finished. The connection is closed
    /// once the PDU has been incomplete longer than the deadline; other hosts carry on.
    func testTrickledPDUIsCutOffOnADeadline() throws {
        var settings = TargetSettings()
        settings.pduTimeoutMs = 1000
        harness = try TargetHarness(settings: settings)
        let slow = try harness.controller(queues: 1)
        let other = try harness.controller(queues: 1, hostNQN: "nqn.2014-08.org.nvmexpress:uuid:0000aaaa-0000-4000-8000-000000000009")
        // 20 of a capsule command's 72 header bytes, one at a time.
        for b in [UInt8(0x04), 0, 72, 0, 72, 0, 0, 0] + [UInt8](repeating: 0, count: 12) {
            try slow.ioQueues[0].socket.send([b])
            usleep(20_000)
        }
        XCTAssertTrue(slow.ioQueues[0].socket.waitForClose(seconds: 5), "closed within the deadline plus a tick")
        let data = pattern(4096, seed: 3)
        try other.write(lba: 100, data: data)
        XCTAssertEqual(try other.read(lba: 100, blocks: 8), data)
    }

    /// One host cannot take every queue; one subsystem every controller.
    func testPerHostQueueAndPerSubsystemControllerLimits() throws {
        var settings = TargetSettings()
        settings.maxQueuesPerHost = 3
        settings.maxControllersPerSubsystem = 3
        harness = try TargetHarness(settings: settings)
        let greedy = try harness.controller(queues: 2)  // admin + 2 I/O queues: at the limit
        XCTAssertThrowsError(try greedy.createIOQueues(1)) { e in
            XCTAssertTrue("\(e)".contains("\(NVMeStatus.connectControllerBusy)") || "\(e)".lowercased().contains("busy"), "\(e)")
        }
        // Another host is not affected by the first one's limit.
        let hosts = (1...2).map { "nqn.2014-08.org.nvmexpress:uuid:0000bbbb-0000-4000-8000-00000000000\($0)" }
        var others = try hosts.map { try harness.controller(queues: 1, hostNQN: $0) }
        // The subsystem now has 3 controllers: a fourth is refused until one leaves.
        XCTAssertThrowsError(try harness.controller(queues: 0, hostNQN: "nqn.2014-08.org.nvmexpress:uuid:0000cccc-0000-4000-8000-000000000001"))
        others.removeLast()
        XCTAssertTrue(harness.eventually {
            (try? self.harness.controller(queues: 0, hostNQN: "nqn.2014-08.org.nvmexpress:uuid:0000cccc-0000-4000-8000-000000000001")) != nil
        })
        XCTAssertEqual(others.count, 1)
    }
}
