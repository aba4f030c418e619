import NVMeInitiator
import NVMeWire
import XCTest

/// Fused Compare and Write: pairing rules, outcomes, and atomicity against other hosts.
final class FusedCompareWriteTests: XCTestCase {
    var harness: TargetHarness!

    override func setUpWithError() throws { harness = try TargetHarness() }
    override func tearDown() { harness.stop() }

    private func fused(_ q: QueuePair, lba: UInt64, expect: [UInt8], write: [UInt8]) throws -> (NVMeStatus, NVMeStatus) {
        var compare = SubmissionQueueEntry(opcode: 0x05, commandID: 0, nsid: 1, cdw10: UInt32(lba), cdw12: UInt32(expect.count / 512 - 1))
        compare.flags = 0x40 | 1
        var w = HostController.writeCommand(nsid: 1, lba: lba, blocks: write.count / 512)
        w.flags = 0x40 | 2
        let c1 = try q.submit(compare, write: expect)
        let c2 = try q.submit(w, write: write)
        return (try q.wait(c1).status, try q.wait(c2).status)
    }

    func testPairOutcomes() throws {
        let c = try harness.controller(queues: 1)
        XCTAssertEqual(try c.identify(cns: 1)[522] & 1, 1, "FUSES: compare and write")
        let q = c.ioQueues[0]
        let x = pattern(4096, seed: 1), y = pattern(4096, seed: 2)
        try c.write(lba: 64, data: x)
        var r = try fused(q, lba: 64, expect: x, write: y)
        XCTAssertEqual(r.0, .success)
        XCTAssertEqual(r.1, .success)
        XCTAssertEqual(try c.read(lba: 64, blocks: 8), y)
        // Mismatch: nothing is written, both halves fail.
        r = try fused(q, lba: 64, expect: x, write: pattern(4096, seed: 3))
        XCTAssertEqual(r.0, .compareFailure)
        XCTAssertEqual(r.1, .fusedCommandFailed)
        XCTAssertEqual(try c.read(lba: 64, blocks: 8), y)
        // A large pair (through R2T on both halves).
        let big = pattern(128 * 1024, seed: 4)
        try c.write(lba: 1024, data: big)
        r = try fused(q, lba: 1024, expect: big, write: x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x + x)
        XCTAssertEqual(r.0, .success)
        XCTAssertEqual(r.1, .success)
    }

    func testPairingRules() throws {
        let c = try harness.controller(queues: 1)
        let q = c.ioQueues[0]
        let x = pattern(512, seed: 9)
        try c.write(lba: 8, data: x)
        // A Compare with FUSE 01b followed by an ordinary command: Missing Fused Command.
        var compare = SubmissionQueueEntry(opcode: 0x05, commandID: 0, nsid: 1, cdw10: 8, cdw12: 0)
        compare.flags = 0x41
        let first = try q.submit(compare, write: x)
        let read = try q.submit(HostController.readCommand(nsid: 1, lba: 8, blocks: 1), readLength: 512)
        XCTAssertEqual(try q.wait(first).status, .fusedCommandMissing)
        XCTAssertEqual(try q.wait(read).data, x)
        // A Write with FUSE 10b and no Compare before it.
        var w = HostController.writeCommand(nsid: 1, lba: 8, blocks: 1)
        w.flags = 0x42
        XCTAssertEqual(try q.execute(w, write: x).status, .fusedCommandMissing)
        // Halves that disagree on the range.
        let c1 = try q.submit(compare, write: x)
        var w2 = HostController.writeCommand(nsid: 1, lba: 9, blocks: 1)
        w2.flags = 0x42
        let c2 = try q.submit(w2, write: x)
        XCTAssertEqual(try q.wait(c1).status, .fusedCommandFailed)
        XCTAssertEqual(try q.wait(c2).status, .invalidField)
        // FUSE 01b on something else than Compare.
        var badFirst = HostController.readCommand(nsid: 1, lba: 8, blocks: 1)
        badFirst.flags = 0x41
        XCTAssertEqual(try q.execute(badFirst, readLength: 512).status, .invalidField)
    }

    /// Two hosts increment one counter block with compare-and-write while a third writes
    /// elsewhere; no increment may be lost.
    func testCompareAndWriteIsAtomicAcrossHosts() throws {
        let hosts = try (0..<2).map { n in
            try harness.controller(queues: 1, hostNQN: "nqn.2026-11.io.fathom.test:counter-\(n)-xxxxxxxxxxxx")
        }
        let writer = try harness.controller(queues: 1, hostNQN: "nqn.2026-11.io.fathom.test:writer-xxxxxxxxxxxxx")
        func block(_ v: UInt64) -> [UInt8] {
            var b = [UInt8](repeating: 0, count: 512)
            b.withUnsafeMutableBytes { $0.baseAddress!.put64(v, 0) }
            return b
        }
        try hosts[0].write(lba: 4000, data: block(0))
        let rounds = 40
        let group = DispatchGroup()
        let failures = NSLock()
        var errors: [String] = []
        for (n, h) in hosts.enumerated() {
            group.enter()
            DispatchQueue.global().async {
                defer { group.leave() }
                do {
                    var done = 0
                    while done < rounds {
                        let current = try h.read(lba: 4000, blocks: 1)
                        let v = current.withUnsafeBytes { $0.baseAddress!.le64(0) }
                        let r = try self.fused(h.ioQueues[0], lba: 4000, expect: current, write: block(v + 1))
                        if r.0 == .success && r.1 == .success { done += 1 } else if r.0 != .compareFailure {
                            throw HostError.failed("fused \(n)", r.0)
                        }
                    }
                } catch {
                    failures.lock(); errors.append("\(error)"); failures.unlock()
                }
            }
        }
        group.enter()
        DispatchQueue.global().async {
            defer { group.leave() }
            for k in 0..<200 { try? writer.write(lba: UInt64(5000 + k % 50), data: block(UInt64(k))) }
        }
        group.wait()
        XCTAssertEqual(errors, [])
        XCTAssertEqual(try hosts[1].read(lba: 4000, blocks: 1), block(UInt64(2 * rounds)))
        XCTAssertEqual(try writer.read(lba: 5049, blocks: 1), block(199))
    }
}
