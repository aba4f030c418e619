import CNVMeTypes
import FathomTarget
import NVMeWire
import XCTest

/// The subsystem model without any transport: Connect, properties, admin and I/O decoding.
final class ControllerTests: XCTestCase {
    let nqn = "nqn.2026-11.io.fathom.unit:a"
    let host = "nqn.2014-08.org.nvmexpress:uuid:6d2e1c70-3f4b-4e25-9a3d-0d1c2b3a4f50"
    var target: Target!
    var port: FathomTarget.Port!

    override func setUp() {
        let ns = Namespace(nsid: 1, nguid: Array(0..<16), uuid: Array(16..<32), readOnly: false, backend: FakeBackend(blocks: 2048), label: "fake")
        let ro = Namespace(nsid: 4, nguid: Array(32..<48), uuid: Array(48..<64), readOnly: true, backend: FakeBackend(blocks: 64, shift: 12), label: "ro")
        let sub = Subsystem(nqn: nqn, serial: "S", model: "M", allowAnyHost: true, allowedHosts: [], namespaces: [ns, ro])
        port = FathomTarget.Port(id: 1, address: "0.0.0.0", serviceID: "4420", isIPv6: false, subsystemNQNs: [nqn])
        target = Target(settings: TargetSettings(), subsystems: [sub], ports: [port])
    }

    func connectData(_ subnqn: String, cntlid: UInt16 = 0xFFFF) -> [UInt8] {
        var d = [UInt8](repeating: 0, count: 1024)
        d.withUnsafeMutableBytes {
            $0.baseAddress!.put16(cntlid, 16)
            $0.baseAddress!.putASCII(subnqn, 256, width: 256, pad: 0)
            $0.baseAddress!.putASCII(host, 512, width: 256, pad: 0)
        }
        return d
    }

    func connect(qid: UInt16 = 0, sqsize: UInt32 = 31, subnqn: String? = nil, cntlid: UInt16 = 0xFFFF, kato: UInt32 = 0) -> ConnectOutcome {
        let sqe = SubmissionQueueEntry(opcode: 0x7F, commandID: 1, nsid: 1, cdw10: UInt32(qid) << 16, cdw11: sqsize, cdw12: kato)
        return connectData(subnqn ?? nqn, cntlid: cntlid).withUnsafeBytes { target.connect(sqe, data: $0, port: port, peer: "test") }
    }

    func adminController() throws -> Controller {
        guard case let .admin(c, sqsize) = connect() else {
            struct ConnectFailed: Error {}
            XCTFail("admin Connect was refused")
            throw ConnectFailed()
        }
        XCTAssertEqual(sqsize, 32)
        return c
    }

    func run(_ c: Controller, _ sqe: SubmissionQueueEntry, length: Int = 4096) -> (CommandCompletion, [UInt8]) {
        var buffer = [UInt8](repeating: 0xEE, count: length)
        let outcome = buffer.withUnsafeMutableBytes {
            c.executeAdmin(sqe, data: $0, context: QueueContext(queueID: 0, localAddress: "192.0.2.7"), target: target)
        }
        switch outcome {
        case let .complete(done): return (done, buffer)
        case let .completeElsewhere(_, work): return (work(), buffer)  // a transport's worker would run it
        default: return (.failure(.internalError), buffer)
        }
    }

    func enable(_ c: Controller) {
        _ = run(c, SubmissionQueueEntry(opcode: 0x7F, commandID: 2, nsid: 0, cdw10: 0, cdw11: 0x14, cdw12: 1 | 6 << 16 | 4 << 20), length: 0)
    }

    func testConnectValidation() throws {
        guard case .rejected(.connectInvalidParameters, let dw0) = connect(subnqn: "nqn.2026-11.io.fathom.unit:none") else { return XCTFail() }
        XCTAssertEqual(dw0, 1 << 16 | 256)
        guard case .rejected(.connectInvalidParameters, 44) = connect(sqsize: 0) else { return XCTFail("sqsize 0") }
        guard case .rejected(.connectInvalidParameters, _) = connect(cntlid: 7) else { return XCTFail("admin cntlid must be FFFFh") }
        let c = try adminController()
        // I/O queues need an enabled controller and granted queues.
        guard case .rejected(.commandSequenceError, _) = connect(qid: 1, cntlid: c.id) else { return XCTFail("not enabled") }
        enable(c)
        guard case .rejected(.connectInvalidParameters, 42) = connect(qid: 1, cntlid: c.id) else { return XCTFail("no queues granted") }
        let (nq, _) = run(c, SubmissionQueueEntry(opcode: 9, commandID: 3, cdw10: 7, cdw11: 3 | 3 << 16), length: 0)
        XCTAssertEqual(nq.dw0, 3 | 3 << 16)
        guard case let .io(ioc, 128) = connect(qid: 2, sqsize: 127, cntlid: c.id) else { return XCTFail("io connect") }
        XCTAssertTrue(ioc === c)
        guard case .rejected = connect(qid: 2, cntlid: c.id) else { return XCTFail("queue connected twice") }
        guard case .rejected = connect(qid: 5, cntlid: c.id) else { return XCTFail("qid above granted") }
        guard case .rejected = connect(qid: 1, cntlid: c.id &+ 100) else { return XCTFail("unknown controller") }
        target.remove(c)
        XCTAssertTrue(c.isDead)
        XCTAssertEqual(target.controllerCount, 0)
    }

    func testPropertiesEnableAndShutdown() throws {
        let c = try adminController()
        let (cap, _) = run(c, SubmissionQueueEntry(opcode: 0x7F, commandID: 1, nsid: 4, cdw10: 1, cdw11: 0), length: 0)
        let capValue = UInt64(cap.dw0) | UInt64(cap.dw1) << 32
        XCTAssertEqual(capValue & 0xFFFF, 1023, "MQES")
        XCTAssertEqual((capValue >> 37) & 1, 1, "NVM command set")
        let (vs, _) = run(c, SubmissionQueueEntry(opcode: 0x7F, commandID: 1, nsid: 4, cdw10: 0, cdw11: 8), length: 0)
        XCTAssertEqual(vs.dw0, 0x10300)
        // Admin commands before enable are refused.
        XCTAssertEqual(run(c, SubmissionQueueEntry(opcode: 6, commandID: 1, cdw10: 1)).0.status, .commandSequenceError)
        XCTAssertFalse(c.isReady)
        enable(c)
        XCTAssertTrue(c.isReady)
        // CAP is 8 bytes: a 4-byte read of it is invalid.
        XCTAssertEqual(run(c, SubmissionQueueEntry(opcode: 0x7F, commandID: 1, nsid: 4, cdw10: 0, cdw11: 0), length: 0).0.status, .invalidField)
        // Shutdown: SHST reads "complete".
        _ = run(c, SubmissionQueueEntry(opcode: 0x7F, commandID: 2, nsid: 0, cdw10: 0, cdw11: 0x14, cdw12: 1 | 6 << 16 | 4 << 20 | 1 << 14), length: 0)
        let (csts, _) = run(c, SubmissionQueueEntry(opcode: 0x7F, commandID: 1, nsid: 4, cdw10: 0, cdw11: 0x1C), length: 0)
        XCTAssertEqual(csts.dw0 & 0xC, 0x8)
    }

    func testIdentifyAndDiscoveryAddressSubstitution() throws {
        let c = try adminController()
        enable(c)
        let (done, id) = run(c, SubmissionQueueEntry(opcode: 6, commandID: 1, cdw10: 1))
        XCTAssertEqual(done.dataLength, 4096)
        XCTAssertEqual(Array(id[78..<80]), [UInt8(c.id & 0xFF), UInt8(c.id >> 8)])
        let (_, ro) = run(c, SubmissionQueueEntry(opcode: 6, commandID: 1, nsid: 4, cdw10: 0))
        XCTAssertEqual(ro[99], 1)
        XCTAssertEqual(ro[130], 12)
        XCTAssertEqual(run(c, SubmissionQueueEntry(opcode: 6, commandID: 1, nsid: 9, cdw10: 3)).0.status, .invalidNamespace)
        XCTAssertEqual(run(c, SubmissionQueueEntry(opcode: 6, commandID: 1, cdw10: 1), length: 100).0.status, .dataSGLLengthInvalid)
        // Discovery on a wildcard port advertises the address the host reached.
        let entries = target.discoveryLog(hostNQN: host, portID: port.id, localAddress: "192.0.2.7").entries
        XCTAssertEqual(entries.map(\.address), ["192.0.2.7", "192.0.2.7"])
        XCTAssertEqual(entries[0].subsystemNQN, nqn)
    }

    func testIODecodeChecksEverything() {
        let sub = target.subsystems[nqn]!
        func decode(_ sqe: SubmissionQueueEntry) -> NVMeStatus? {
            if case let .fail(s) = IODecode(sqe, subsystem: sub, maxTransfer: 512 * 1024) { return s }
            return nil
        }
        func rw(_ op: UInt8, nsid: UInt32 = 1, lba: UInt64, blocks: UInt32, sgl: Int) -> SubmissionQueueEntry {
            SubmissionQueueEntry(opcode: op, commandID: 1, nsid: nsid, sgl: .transport(length: sgl),
                                 cdw10: UInt32(truncatingIfNeeded: lba), cdw11: UInt32(truncatingIfNeeded: lba >> 32), cdw12: blocks - 1)
        }
        XCTAssertNil(decode(rw(2, lba: 0, blocks: 8, sgl: 4096)))
        XCTAssertEqual(decode(rw(2, lba: 2041, blocks: 8, sgl: 4096)), .lbaOutOfRange)
        XCTAssertNil(decode(rw(2, lba: 2040, blocks: 8, sgl: 4096)))
        XCTAssertEqual(decode(rw(2, lba: 1 << 63, blocks: 8, sgl: 4096)), .lbaOutOfRange)
        XCTAssertEqual(decode(rw(2, nsid: 2, lba: 0, blocks: 1, sgl: 512)), .invalidNamespace)
        XCTAssertEqual(decode(rw(2, nsid: 0xFFFF_FFFF, lba: 0, blocks: 1, sgl: 512)), .invalidNamespace)
        XCTAssertEqual(decode(rw(2, lba: 0, blocks: 8, sgl: 512)), .dataSGLLengthInvalid)
        XCTAssertEqual(decode(rw(1, nsid: 4, lba: 0, blocks: 1, sgl: 4096)), .namespaceWriteProtected)
        XCTAssertNil(decode(rw(2, nsid: 4, lba: 0, blocks: 1, sgl: 4096)))
        XCTAssertEqual(decode(rw(0x7C, lba: 0, blocks: 1, sgl: 512)), .invalidOpcode)
        XCTAssertNil(decode(SubmissionQueueEntry(opcode: 0, commandID: 1, nsid: 1)))
        if case let .ok(_, req) = IODecode(rw(1, lba: 16, blocks: 8, sgl: 4096), subsystem: sub, maxTransfer: 512 * 1024) {
            XCTAssertEqual(req.offset, 8192)
            XCTAssertEqual(req.length, 4096)
        } else { XCTFail() }
    }

    func testAsyncEventsAreHeldAndLimited() throws {
        let c = try adminController()
        enable(c)
        var held = 0
        for i in 0..<4 {
            var b = [UInt8]()
            let o = b.withUnsafeMutableBytes { c.executeAdmin(SubmissionQueueEntry(opcode: 0x0C, commandID: UInt16(10 + i)), data: $0,
                                                              context: QueueContext(queueID: 0, localAddress: ""), target: target) }
            if case .held = o { held += 1 }
        }
        XCTAssertEqual(held, 4)
        XCTAssertEqual(run(c, SubmissionQueueEntry(opcode: 0x0C, commandID: 20), length: 0).0.status, .asyncEventLimitExceeded)
        let delivered = c.postAsyncEvent(0x0002_0004)
        XCTAssertEqual(delivered?.commandID, 10)
    }

    func testKeepAliveExpiry() throws {
        guard case let .admin(c, _) = connect(kato: 1000) else { return XCTFail() }
        let now = MonotonicClock.nowMs()
        c.noteActivity(nowMs: now)
        XCTAssertFalse(c.keepAliveExpired(nowMs: now + 900))
        XCTAssertTrue(c.keepAliveExpired(nowMs: now + 1001))
        guard case let .admin(d, _) = connect(subnqn: NQN.discovery) else { return XCTFail() }
        XCTAssertEqual(d.keepAliveTimeoutMs, 120_000, "discovery default KATO")
    }
}
