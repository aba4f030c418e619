import CNVMeTypes
import FathomTarget
import NVMeInitiator
import NVMeWire
import XCTest

/// The daemon driven by the Swift host over real TCP: discovery, connect, identify, I/O.
final class EndToEndTests: XCTestCase {
    var harness: TargetHarness!

    override func setUpWithError() throws { harness = try TargetHarness() }
    override func tearDown() { harness.stop() }

    func testDiscoveryLogListsSubsystemsWithRealAddress() throws {
        let d = try harness.controller(queues: 0, subsystem: NQN.discovery)
        let id = try d.identify(cns: 1)
        XCTAssertEqual(id[111], 2, "CNTRLTYPE must be 2 (discovery)")
        let log = try d.discoveryLog()
        let nvm = log.entries.filter { $0.subsystemType == .nvm }
        // The restricted subsystem does not let the default host in, so it is not listed.
        XCTAssertEqual(nvm.map(\.subsystemNQN), [TargetHarness.nqn])
        XCTAssertEqual(nvm.first?.address, "127.0.0.1")
        XCTAssertEqual(nvm.first?.serviceID, String(harness.port))
        XCTAssertEqual(nvm.first?.portID, 7)
        XCTAssertTrue(log.entries.contains { $0.subsystemType == .currentDiscovery && $0.subsystemNQN == NQN.discovery })
        XCTAssertFalse(log.entries.contains { $0.address == "0.0.0.0" })
        // The allowed host sees both subsystems.
        let d2 = try harness.controller(queues: 0, hostNQN: TargetHarness.allowedHost, subsystem: NQN.discovery)
        XCTAssertEqual(Set(try d2.discoveryLog().entries.filter { $0.subsystemType == .nvm }.map(\.subsystemNQN)),
                       [TargetHarness.nqn, TargetHarness.restrictedNQN])
        // Discovery controllers accept Keep Alive and only the discovery log.
        try d.keepAlive()
        XCTAssertThrowsError(try d.getLogPage(0x02, length: 512))
    }

    func testIdentifyControllerAndNamespace() throws {
        let c = try harness.controller(queues: 2)
        XCTAssertEqual(c.ioQueues.count, 2)
        let id = try c.identify(cns: 1)
        id.withUnsafeBytes { b in
            let p = b.baseAddress!
            XCTAssertEqual(p.le16(78), c.controllerID, "cntlid")
            XCTAssertEqual(p.ascii(4, width: 20), "fathomtest0001")
            XCTAssertEqual(p.ascii(24, width: 40), "Fathom Test")
            XCTAssertEqual(p.le32(80), 0x0001_0300, "version 1.3")
            XCTAssertEqual(p.le8(111), 1, "CNTRLTYPE I/O")
            XCTAssertNotEqual(p.le16(320), 0, "KAS")
            XCTAssertEqual(p.le8(77), 7, "MDTS 512 KiB")
            XCTAssertEqual(p.ascii(768, width: 256), TargetHarness.nqn)
            XCTAssertEqual(p.le32(1792), UInt32((64 + 16384) / 16), "IOCCSZ")
            XCTAssertEqual(p.le32(1796), 1, "IORCSZ")
            XCTAssertEqual(p.le32(536) & 1, 1, "SGLS")
        }
        let ns = try c.identify(cns: 0, nsid: 1)
        ns.withUnsafeBytes { b in
            XCTAssertEqual(b.baseAddress!.le64(0), harness.blocks, "NSZE")
            XCTAssertEqual(b.baseAddress!.le8(130), 9, "LBADS of format 0 (512 B)")
            XCTAssertEqual(b.baseAddress!.le8(99), 0, "not write protected")
        }
        XCTAssertEqual(Array(ns[104..<120]), UUIDText.parse("00112233445566778899aabbccddeeff")!, "NGUID")
        let list = try c.identify(cns: 2)
        XCTAssertEqual(Array(list[0..<8]), [1, 0, 0, 0, 0, 0, 0, 0])
        let desc = try c.identify(cns: 3, nsid: 1)
        XCTAssertEqual(desc[0], 2)  // NGUID first
        XCTAssertEqual(desc[20], 3)  // then UUID
        XCTAssertEqual(Array(desc[24..<40]), UUIDText.parse("6f1d1b2a-93c4-4b1e-8a55-0c3f6a1e2d44")!)
        // An inactive NSID in range reads as zeros; an NSID past NN is invalid.
        XCTAssertEqual(try c.identify(cns: 0, nsid: 5), [UInt8](repeating: 0, count: 4096))
        XCTAssertThrowsError(try c.identify(cns: 0, nsid: 0xFFFF_FFF0))
    }

    func testWriteReadVerifyRandomLBAsOnSeveralQueues() throws {
        let c = try harness.controller(queues: 3)
        var rng = SystemRandomNumberGenerator()
        var written: [(UInt64, [UInt8])] = []
        // Each write gets its own 1 MiB region, at a random block offset inside it.
        for round in 0..<60 {
            let blocks = [1, 8, 16, 32, 64, 256, 1024][round % 7]
            let lba = UInt64(round) * 2048 + UInt64.random(in: 0...UInt64(2048 - blocks), using: &rng)
            let data = pattern(blocks * 512, seed: UInt64(round))
            try c.write(queue: round % 3, lba: lba, data: data, fua: round % 5 == 0)
            written.append((lba, data))
        }
        try c.flush()
        for (n, (lba, data)) in written.enumerated().shuffled() {
            XCTAssertEqual(try c.read(queue: (n + 1) % 3, lba: lba, blocks: data.count / 512), data, "lba \(lba)")
        }
    }

    func testPipelinedCommandsCompleteOutOfOrderSafely() throws {
        let c = try harness.controller(queues: 1)
        let q = c.ioQueues[0]
        var cids: [UInt16: [UInt8]] = [:]
        for i in 0..<64 {
            let data = pattern(4096 * (1 + i % 4), seed: UInt64(1000 + i))
            let cid = try q.submit(HostController.writeCommand(nsid: 1, lba: UInt64(i) * 64, blocks: data.count / 512), write: data)
            cids[cid] = data
        }
        for cid in cids.keys { XCTAssertTrue(try q.wait(cid).status.isSuccess) }
        var reads: [UInt16: Int] = [:]
        for i in 0..<64 {
            let len = 4096 * (1 + i % 4)
            reads[try q.submit(HostController.readCommand(nsid: 1, lba: UInt64(i) * 64, blocks: len / 512), readLength: len)] = i
        }
        for (cid, i) in reads {
            let r = try q.wait(cid)
            XCTAssertTrue(r.status.isSuccess)
            XCTAssertEqual(r.data, pattern(4096 * (1 + i % 4), seed: UInt64(1000 + i)))
        }
    }

    func testLargeWritesUseR2TAndReadsLargerThanMaxH2CData() throws {
        let c = try harness.controller(queues: 1)
        let q = c.ioQueues[0]
        XCTAssertEqual(q.maxH2CData, 128 * 1024)
        // 512 KiB (MDTS): one R2T, four H2CData PDUs; then one 512 KiB C2HData.
        let big = pattern(512 * 1024, seed: 77)
        try c.write(lba: 4096, data: big)
        XCTAssertEqual(try c.read(lba: 4096, blocks: 1024), big)
        // A small write forced through R2T instead of in-capsule.
        let small = pattern(4096, seed: 78)
        XCTAssertTrue(try q.execute(HostController.writeCommand(nsid: 1, lba: 10, blocks: 8), write: small, forceR2T: true).status.isSuccess)
        XCTAssertEqual(try c.read(lba: 10, blocks: 8), small)
    }

    func testHeaderAndDataDigests() throws {
        for (h, d) in [(true, false), (false, true), (true, true)] {
            let c = try harness.controller(queues: 2, headerDigest: h, dataDigest: d)
            let data = pattern(256 * 1024, seed: h ? 5 : 6)
            try c.write(lba: 2048, data: data)
            try c.write(queue: 1, lba: 8, data: Array(data[0..<4096]))
            XCTAssertEqual(try c.read(queue: 1, lba: 2048, blocks: 512), data)
            XCTAssertEqual(try c.read(lba: 8, blocks: 8), Array(data[0..<4096]))
            XCTAssertEqual(try c.identify(cns: 1)[78], UInt8(truncatingIfNeeded: c.controllerID))
        }
    }

    func testSQFlowControlDisableAndWriteCacheOff() throws {
        let c = try harness.controller(queues: 0)
        try c.createIOQueues(1, attributes: 0x4)  // CATTR bit 2: host disables SQ flow control
        let q = c.ioQueues[0]
        let data = pattern(8192, seed: 31)
        let w = try q.execute(HostController.writeCommand(nsid: 1, lba: 64, blocks: 16), write: data)
        XCTAssertTrue(w.status.isSuccess)
        XCTAssertEqual(w.cqe.sqHead, 0xFFFF, "no SQ head to report")
        let r = try q.execute(HostController.readCommand(nsid: 1, lba: 64, blocks: 16), readLength: 8192)
        XCTAssertTrue(r.completedByC2HSuccess, "C2HData SUCCESS replaces the CapsuleResp")
        XCTAssertEqual(r.data, data)
        // Without the host's request, SUCCESS is never used.
        let plain = try harness.controller(queues: 1)
        let r2 = try plain.ioQueues[0].execute(HostController.readCommand(nsid: 1, lba: 64, blocks: 16), readLength: 8192)
        XCTAssertFalse(r2.completedByC2HSuccess)
        // Write cache off: writes still complete (durably) and read back.
        XCTAssertTrue(try plain.setFeature(0x06, 0).status.isSuccess)
        XCTAssertEqual(try plain.getFeature(0x06).cqe.dw0, 0)
        try plain.write(lba: 200, data: data)
        XCTAssertEqual(try plain.read(lba: 200, blocks: 16), data)
    }

    func testKeepAliveExpiryTearsDownController() throws {
        let c = try harness.controller(queues: 1, keepAliveMs: 1000)
        XCTAssertEqual(harness.target.controllerCount, 1)
        // No traffic: within KATO + the 1 s tick the controller goes, with its I/O queue.
        XCTAssertTrue(c.admin.socket.waitForClose(seconds: 5))
        XCTAssertTrue(c.ioQueues[0].socket.waitForClose(seconds: 3))
        XCTAssertTrue(harness.eventually { self.harness.target.controllerCount == 0 })
        // A controller that sends keep-alives survives.
        let alive = try harness.controller(queues: 0, keepAliveMs: 1000)
        for _ in 0..<6 {
            usleep(400_000)
            try alive.keepAlive()
        }
        XCTAssertEqual(harness.target.controllerCount, 1)
    }

    func testHostNotAllowedIsRefusedAtConnect() throws {
        XCTAssertThrowsError(try harness.controller(queues: 0, subsystem: TargetHarness.restrictedNQN)) { error in
            guard case let HostError.connectRefused(status, dw0) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(status, .connectInvalidHost)
            XCTAssertEqual(dw0, 1 << 16 | 512, "IATTR + IPO of the host NQN")
        }
        XCTAssertThrowsError(try harness.controller(queues: 0, subsystem: "nqn.2026-11.io.fathom.test:nope")) { error in
            guard case let HostError.connectRefused(status, dw0) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(status, .connectInvalidParameters)
            XCTAssertEqual(dw0, 1 << 16 | 256)
        }
        // The allowed host gets in, and the namespace there is write protected.
        let c = try harness.controller(queues: 1, hostNQN: TargetHarness.allowedHost, subsystem: TargetHarness.restrictedNQN)
        XCTAssertEqual(try c.identify(cns: 0, nsid: 1)[99] & 1, 1, "NSATTR write protected")
        XCTAssertThrowsError(try c.write(lba: 0, data: pattern(512, seed: 1))) { error in
            XCTAssertEqual(error as? HostError, .failed("Write", .namespaceWriteProtected))
        }
        _ = try c.read(lba: 0, blocks: 8)
        XCTAssertEqual(harness.target.controllerCount, 1)
    }

    /// spdk_nvme_perf connects with an empty HOSTNQN unless given one; like nvmet and SPDK, an
    /// open subsystem takes it as an anonymous host, a restricted one refuses it.
    func testEmptyHostNQNIsAnAnonymousHost() throws {
        let c = try harness.controller(queues: 1, hostNQN: "")
        let data = pattern(4096, seed: 21)
        try c.write(lba: 64, data: data)
        XCTAssertEqual(try c.read(lba: 64, blocks: 8), data)
        XCTAssertThrowsError(try harness.controller(queues: 0, hostNQN: "", subsystem: TargetHarness.restrictedNQN)) { error in
            guard case let HostError.connectRefused(status, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(status, .connectInvalidHost)
        }
    }

    func testLogPagesAndFeatures() throws {
        let c = try harness.controller(queues: 1)
        try c.write(lba: 0, data: pattern(64 * 1024, seed: 9))
        _ = try c.read(lba: 0, blocks: 128)
        let smart = try c.getLogPage(0x02, length: 512)
        smart.withUnsafeBytes { b in
            XCTAssertEqual(b.baseAddress!.le64(32), 1, "data units read (1000 x 512 B, rounded up)")
            XCTAssertEqual(b.baseAddress!.le64(64), 1, "host read commands")
            XCTAssertEqual(b.baseAddress!.le64(80), 1, "host write commands")
        }
        let supported = try c.getLogPage(0x00, length: 1024)
        XCTAssertEqual(supported[0x02 * 4], 1)
        XCTAssertEqual(supported[0x05 * 4], 1)
        let effects = try c.getLogPage(0x05, length: 4096)
        XCTAssertEqual(effects[1024 + 1 * 4], 3, "Write: supported + changes LBA content")
        XCTAssertEqual(try c.getLogPage(0x03, length: 512)[0], 1, "active firmware slot")
        // Offsets into a page (dword aligned), and a misaligned offset.
        XCTAssertEqual(try c.getLogPage(0x00, length: 8, offset: 8), Array(supported[8..<16]))
        XCTAssertThrowsError(try c.getLogPage(0x00, length: 8, offset: 2))
        XCTAssertThrowsError(try c.getLogPage(0x42, length: 512))
        // Features.
        let nq = try c.getFeature(0x07)
        XCTAssertEqual(nq.cqe.dw0 & 0xFFFF, 0, "one I/O queue granted (0-based)")
        XCTAssertTrue(try c.setFeature(0x0F, 3000).status.isSuccess)
        XCTAssertEqual(try c.getFeature(0x0F).cqe.dw0, 3000)
        XCTAssertEqual(try c.getFeature(0x06).cqe.dw0, 1, "volatile write cache on")
        XCTAssertTrue(try c.setFeature(0x0B, 0x100).status.isSuccess)
        XCTAssertEqual(try c.getFeature(0x0B).cqe.dw0, 0x100)
        XCTAssertEqual(try c.setFeature(0x08, 0).status, .invalidField, "interrupt coalescing is PCIe only")
        XCTAssertEqual(try c.getFeature(0x0F, select: 3).cqe.dw0, 0x4, "KATO is changeable")
        // Error log has the failures above, newest first.
        let errors = try c.getLogPage(0x01, length: 64 * 4)
        errors.withUnsafeBytes { XCTAssertGreaterThan($0.baseAddress!.le64(0), 0) }
        // Shutdown as the Linux host does it.
        try c.shutdown()
    }
}
