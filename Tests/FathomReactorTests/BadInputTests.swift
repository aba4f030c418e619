import NVMeInitiator
import NVMeWire
import XCTest

/// Hostile and broken hosts: every bad field gets the right status or a C2HTermReq that
/// ends only that connection; the daemon and other hosts carry on.
final class BadInputTests: XCTestCase {
    var harness: TargetHarness!
    var bystander: HostController!

    override func setUpWithError() throws {
        harness = try TargetHarness()
        bystander = try harness.controller(queues: 1)
        try bystander.write(lba: 100, data: pattern(4096, seed: 42))
    }

    override func tearDownWithError() throws {
        // Whatever happened, the other host's data and queues are intact.
        XCTAssertEqual(try bystander.read(lba: 100, blocks: 8), pattern(4096, seed: 42))
        harness.stop()
    }

    func testCommandErrorsGetTheMatchingStatus() throws {
        let c = try harness.controller(queues: 1)
        let io = c.ioQueues[0]
        func status(_ sqe: SubmissionQueueEntry, write: [UInt8] = [], read: Int = 0, on q: QueuePair? = nil) throws -> NVMeStatus {
            try (q ?? io).execute(sqe, write: write, readLength: read).status
        }
        XCTAssertEqual(try status(SubmissionQueueEntry(opcode: 0x7E, commandID: 0), on: c.admin), .invalidOpcode)
        XCTAssertEqual(try status(SubmissionQueueEntry(opcode: 0x7C, commandID: 0, nsid: 1)), .invalidOpcode)
        XCTAssertEqual(try status(HostController.readCommand(nsid: 2, lba: 0, blocks: 1), read: 512), .invalidNamespace)
        XCTAssertEqual(try status(HostController.readCommand(nsid: 0, lba: 0, blocks: 1), read: 512), .invalidNamespace)
        XCTAssertEqual(try status(HostController.readCommand(nsid: 1, lba: harness.blocks - 1, blocks: 2), read: 1024), .lbaOutOfRange)
        XCTAssertEqual(try status(HostController.readCommand(nsid: 1, lba: UInt64.max - 1, blocks: 8), read: 4096), .lbaOutOfRange)
        XCTAssertEqual(try status(HostController.writeCommand(nsid: 1, lba: harness.blocks, blocks: 1), write: pattern(512, seed: 1)), .lbaOutOfRange)
        // Beyond MDTS (512 KiB): 2048 blocks = 1 MiB.
        XCTAssertEqual(try status(HostController.readCommand(nsid: 1, lba: 0, blocks: 2048), read: 512 * 1024), .invalidField)
        // SGL shorter than the transfer.
        XCTAssertEqual(try status(HostController.readCommand(nsid: 1, lba: 0, blocks: 8), read: 2048), .dataSGLLengthInvalid)
        // SGL of a type NVMe/TCP does not use.
        var bad = HostController.readCommand(nsid: 1, lba: 0, blocks: 1)
        bad.sgl = SGLDescriptor(address: 0x1000, length: 512, identifier: 0x20)
        let cid = UInt16(900)
        bad.commandID = cid
        try io.sendCapsule(bad, data: [])
        XCTAssertEqual(try waitRaw(io, cid: cid).status, .sglDescriptorTypeInvalid)
        // PRP data pointer (PSDT 00b) on fabrics.
        var prp = HostController.readCommand(nsid: 1, lba: 0, blocks: 1)
        prp.flags = 0
        prp.commandID = 901
        prp.sgl = .transport(length: 512)
        try io.sendCapsule(prp, data: [])
        XCTAssertEqual(try waitRaw(io, cid: 901).status, .invalidField)
        // Flush of a bad namespace; Identify with a bad CNS; Get Log Page on the I/O queue opcode space.
        XCTAssertEqual(try status(SubmissionQueueEntry(opcode: 0, commandID: 0, nsid: 9)), .invalidNamespace)
        XCTAssertEqual(try status(SubmissionQueueEntry(opcode: 6, commandID: 0, cdw10: 0x55), read: 4096, on: c.admin), .invalidField)
        // A Connect on an already connected queue.
        XCTAssertEqual(try status(SubmissionQueueEntry(opcode: 0x7F, commandID: 0, nsid: 1, cdw11: 31), write: c.connectData(controllerID: 0xFFFF), on: c.admin),
                       .commandSequenceError)
        // Regression (found by scripts/fuzz.sh): a Reservation Report with NUMD FFFFFFFFh
        // overflowed a 32-bit length computation and trapped the daemon.
        XCTAssertEqual(try status(SubmissionQueueEntry(opcode: 0x0E, commandID: 0, nsid: 1, cdw10: 0xFFFF_FFFF, cdw11: 1), read: 4096),
                       .dataSGLLengthInvalid)
        // The connection still works after all of that.
        try c.write(lba: 8, data: pattern(1024, seed: 3))
        XCTAssertEqual(try c.read(lba: 8, blocks: 2), pattern(1024, seed: 3))
    }

    /// The target answered with a bare response (the initiator did not register the command).
    private func waitRaw(_ q: QueuePair, cid: UInt16) throws -> CompletionQueueEntry {
        let common = try q.socket.receive(8)
        let ch = common.withUnsafeBytes { PDUHeader(decoding: $0.baseAddress!) }
        let rest = try q.socket.receive(Int(ch.length) - 8)
        XCTAssertEqual(ch.type, .capsuleResponse)
        let cqe = (common + rest).withUnsafeBytes { CompletionQueueEntry(decoding: $0.baseAddress! + 8) }
        XCTAssertEqual(cqe.commandID, cid)
        return cqe
    }

    func testCommandsBeforeEnableOrConnectAreRefused() throws {
        let c = try HostController(host: "127.0.0.1", port: harness.port, subsystemNQN: TargetHarness.nqn)
        XCTAssertThrowsError(try c.identify(cns: 1)) { XCTAssertEqual($0 as? HostError, .failed("Identify CNS 1", .commandSequenceError)) }
        // An I/O Connect for a controller that is not enabled.
        let q = try QueuePair(host: "127.0.0.1", port: harness.port, queueID: 1)
        let r = try q.execute(SubmissionQueueEntry(opcode: 0x7F, commandID: 0, nsid: 1, cdw10: 1 << 16, cdw11: 31),
                              write: c.connectData(controllerID: c.controllerID))
        XCTAssertFalse(r.status.isSuccess)
        // A read on a queue that never sent Connect.
        let raw = try QueuePair(host: "127.0.0.1", port: harness.port, queueID: 1)
        XCTAssertEqual(try raw.execute(HostController.readCommand(nsid: 1, lba: 0, blocks: 1), readLength: 512).status, .commandSequenceError)
    }

    /// Sends `bytes` after a valid ICReq and expects a C2HTermReq with `fes`, then EOF.
    private func expectTermination(fes: TransportError, headerDigest: Bool = false, dataDigest: Bool = false,
                                   _ send: (QueuePair) throws -> Void) throws {
        let q = try QueuePair(host: "127.0.0.1", port: harness.port, queueID: 0, headerDigest: headerDigest, dataDigest: dataDigest)
        try send(q)
        do {
            while true { try q.receivePDU() }
        } catch let InitiatorError.terminated(status, _) {
            XCTAssertEqual(status, fes.rawValue)
        }
        XCTAssertTrue(q.socket.waitForClose(seconds: 3))
    }

    func testMalformedPDUsEndOnlyThatConnection() throws {
        func raw(_ type: UInt8, flags: UInt8 = 0, hlen: UInt8, pdo: UInt8 = 0, plen: UInt32, pad: Int? = nil) -> [UInt8] {
            var b = [UInt8](repeating: 0, count: pad ?? Int(plen))
            b[0] = type; b[1] = flags; b[2] = hlen; b[3] = pdo
            b.withUnsafeMutableBytes { $0.baseAddress!.put32(plen, 4) }
            return b
        }
        try expectTermination(fes: .invalidHeaderField) { try $0.socket.send(raw(0x04, hlen: 70, plen: 72)) }
        try expectTermination(fes: .invalidHeaderField) { try $0.socket.send(raw(0x11, hlen: 24, plen: 24)) }
        try expectTermination(fes: .pduSequenceError) { try $0.socket.send(raw(0x00, hlen: 128, plen: 128)) }  // second ICReq
        try expectTermination(fes: .pduSequenceError) { try $0.socket.send(raw(0x05, hlen: 24, plen: 24)) }  // a response from the host
        try expectTermination(fes: .invalidHeaderField) { try $0.socket.send(raw(0x04, hlen: 72, plen: 40)) }  // plen < hlen
        try expectTermination(fes: .invalidHeaderField) { try $0.socket.send(raw(0x04, hlen: 72, pdo: 80, plen: 200)) }  // bad PDO
        try expectTermination(fes: .dataTransferLimitExceeded) {  // in-capsule data above 8 KiB on the admin queue
            try $0.socket.send(raw(0x04, hlen: 72, pdo: 72, plen: 72 + 9000))
        }
        // H2CData nobody asked for.
        try expectTermination(fes: .invalidHeaderField) { try $0.sendRawH2CData(cid: 1, tag: 3, offset: 0, bytes: [1, 2, 3, 4], last: true) }
        // Header digest enabled but wrong.
        try expectTermination(fes: .headerDigestError, headerDigest: true) { q in
            var b = raw(0x04, flags: 1, hlen: 72, plen: 76)
            b[72] = 0xDE
            try q.socket.send(b)
        }
        // Header digest negotiated but the PDU does not carry one.
        try expectTermination(fes: .invalidHeaderField, headerDigest: true) { try $0.socket.send(raw(0x04, hlen: 72, plen: 76)) }
        XCTAssertEqual(harness.target.controllerCount, 1, "only the bystander's controller exists")
    }

    func testH2CDataViolationsAndDataDigestErrors() throws {
        let c = try harness.controller(queues: 1, dataDigest: true)
        let q = c.ioQueues[0]
        // R2T for 8 KiB, then H2CData beyond it.
        let data = pattern(8192, seed: 11)
        let cid = try q.submit(HostController.writeCommand(nsid: 1, lba: 0, blocks: 16), write: data, forceR2T: true)
        let r2t = try readPDU(q)
        XCTAssertEqual(r2t.0.type, .r2t)
        let tag = r2t.1.withUnsafeBytes { $0.baseAddress!.le16(10) }
        try q.sendRawH2CData(cid: cid, tag: tag, offset: 4096, bytes: Array(data[0..<4096]), last: false)  // out of order
        do { while true { try q.receivePDU() } } catch let InitiatorError.terminated(status, _) {
            XCTAssertEqual(status, TransportError.dataTransferOutOfRange.rawValue)
        }
        // The admin queue and the controller survive an I/O queue's transport error until teardown rules apply.
        let c2 = try harness.controller(queues: 1, dataDigest: true)
        let q2 = c2.ioQueues[0]
        let cid2 = try q2.submit(HostController.writeCommand(nsid: 1, lba: 0, blocks: 16), write: data, forceR2T: true)
        let r2 = try readPDU(q2)
        let tag2 = r2.1.withUnsafeBytes { $0.baseAddress!.le16(10) }
        try q2.sendRawH2CData(cid: cid2, tag: tag2, offset: 0, bytes: data, last: true, corruptDigest: true)
        do { while true { try q2.receivePDU() } } catch let InitiatorError.terminated(status, _) {
            XCTAssertEqual(status, TransportError.headerDigestError.rawValue)
        }
        XCTAssertTrue(q2.socket.waitForClose(seconds: 3))
        // Nothing of the corrupted write reached the disk.
        XCTAssertNotEqual(try bystander.read(lba: 0, blocks: 16), data)
    }

    func testTooManyOutstandingCommandsAndDisconnect() throws {
        let c = try harness.controller(queues: 0)
        // 2 x 32 admin slots: the 65th outstanding command (AERs are held forever) is fatal.
        for i in 0..<4 { try c.admin.submit(SubmissionQueueEntry(opcode: 0x0C, commandID: UInt16(500 + i))) }
        XCTAssertEqual(try c.admin.execute(SubmissionQueueEntry(opcode: 0x0C, commandID: 0)).status, .asyncEventLimitExceeded)
        // Disconnect on an I/O queue closes that queue only.
        try c.createIOQueues(1)
        let q = c.ioQueues[0]
        XCTAssertTrue(try q.execute(SubmissionQueueEntry(opcode: 0x7F, commandID: 0, nsid: 0x08)).status.isSuccess)
        XCTAssertTrue(q.socket.waitForClose(seconds: 3))
        try c.keepAlive()
        // The queue can be connected again after its disconnect.
        XCTAssertTrue(harness.eventually {
            (try? QueuePair(host: "127.0.0.1", port: self.harness.port, queueID: 1)
                .execute(SubmissionQueueEntry(opcode: 0x7F, commandID: 0, nsid: 1, cdw10: 1 << 16, cdw11: 31),
                         write: c.connectData(controllerID: c.controllerID)).status.isSuccess) ?? false
        })
    }

    func testGarbageBeforeICReqAndBadICReq() throws {
        let s = try TCPSocket(host: "127.0.0.1", port: harness.port)
        var icreq = [UInt8](repeating: 0, count: 128)
        icreq.withUnsafeMutableBytes { ICRequest(headerDigest: false, dataDigest: false).encode(into: $0.baseAddress!) }
        icreq[8] = 1  // PFV 1
        try s.send(icreq)
        let term = try s.receive(24)
        XCTAssertEqual(term[0], PDUType.c2hTermReq.rawValue)
        XCTAssertTrue(s.waitForClose(seconds: 3))
        let g = try TCPSocket(host: "127.0.0.1", port: harness.port)
        try g.send(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        XCTAssertTrue(g.waitForClose(seconds: 3))
    }

    private func readPDU(_ q: QueuePair) throws -> (PDUHeader, [UInt8]) {
        let common = try q.socket.receive(8)
        let ch = common.withUnsafeBytes { PDUHeader(decoding: $0.baseAddress!) }
        return (ch, common + (try q.socket.receive(Int(ch.length) - 8)))
    }
}
