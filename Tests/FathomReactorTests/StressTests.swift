import CNVMeTypes
import FathomTarget
import NVMeInitiator
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Load and churn: many connections at once, connect/disconnect cycles with open file
/// descriptors and memory measured before and after, and a stateful fuzzer that sends
/// random but well-framed PDUs after Connect while a well-behaved host keeps verifying.
final class StressTests: XCTestCase {
    var harness: TargetHarness!

    override func setUpWithError() throws {
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = max(limit.rlim_cur, min(limit.rlim_max, 8192))
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        harness = try TargetHarness()
    }

    override func tearDown() { harness.stop() }

    private func openDescriptors() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? -1 }

    private func residentKiB() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return -1 }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]) ?? -1
    }

    func testThousandSimultaneousConnections() throws {
        var queues: [QueuePair] = []
        for _ in 0..<1000 { queues.append(try QueuePair(host: "127.0.0.1", port: harness.port, queueID: 0)) }
        // All of them are served: a Connect on a few, spread over the list.
        for k in stride(from: 0, to: 1000, by: 97) {
            let c = try HostController(host: "127.0.0.1", port: harness.port, subsystemNQN: TargetHarness.nqn)
            try c.enable()
            _ = k
        }
        let bystander = try harness.controller(queues: 1)
        try bystander.write(lba: 0, data: pattern(4096, seed: 1))
        XCTAssertEqual(try bystander.read(lba: 0, blocks: 8), pattern(4096, seed: 1))
        queues.removeAll()
    }

    func testConnectDisconnectCyclesLeakNothing() throws {
        func cycle() throws {
            let c = try harness.controller(queues: 1)
            try c.write(lba: 8, data: pattern(4096, seed: 2))
        }
        for _ in 0..<50 { try cycle() }  // warm up pools and caches
        XCTAssertTrue(harness.eventually { self.harness.target.controllerCount == 0 })
        usleep(300_000)
        let fds = openDescriptors(), rss = residentKiB()
        for _ in 0..<10_000 { try cycle() }
        XCTAssertTrue(harness.eventually(seconds: 10) { self.harness.target.controllerCount == 0 })
        usleep(500_000)
        XCTAssertEqual(openDescriptors(), fds, "every socket is closed")
        XCTAssertLessThan(residentKiB() - rss, 16 * 1024, "RSS grows by less than 16 MiB over 10,000 cycles (before \(rss) KiB)")
    }

    /// Random but well-framed traffic after a valid Connect, in one session of three sent in
    /// random pieces (PDUs cut across the target's reads, and so across the buffers of its
    /// multishot recv). The daemon must answer or end that connection, never crash; the
    /// bystander's data must verify throughout.
    func testStatefulFuzzing() throws {
        let bystander = try harness.controller(queues: 1)
        var rng = SystemRandomNumberGenerator()
        var seed = UInt64.random(in: 0...UInt64.max, using: &rng)
        print("StressTests.testStatefulFuzzing seed \(seed)")
        func next() -> UInt64 {
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17
            return seed
        }
        var sessions = 0, sent = 0
        for session in 0..<400 {
            let c: HostController
            do { c = try harness.controller(queues: next() % 2 == 0 ? 1 : 0) } catch {
                XCTFail("a well-behaved host could not connect during fuzzing: \(error)")
                continue
            }
            sessions += 1
            let q = c.ioQueues.first ?? c.admin
            if next() % 3 == 0 {
                q.socket.fragmentation = ((0..<8).map { _ in 1 + Int(next() % 5000) }, next() % 2 == 0 ? 0 : 50)
            }
            for _ in 0..<(20 + Int(next() % 40)) {
                var sqe = SubmissionQueueEntry(opcode: UInt8(truncatingIfNeeded: next()), commandID: UInt16(truncatingIfNeeded: next()),
                                               nsid: next() % 4 == 0 ? UInt32(truncatingIfNeeded: next()) : UInt32(next() % 3),
                                               flags: UInt8(truncatingIfNeeded: next()) & 0xC3,
                                               cdw10: UInt32(truncatingIfNeeded: next()), cdw11: UInt32(truncatingIfNeeded: next() % 8 == 0 ? next() : next() % 64),
                                               cdw12: UInt32(truncatingIfNeeded: next() % 4 == 0 ? next() : next() % 256))
                let length = [0, 8, 16, 512, 4096, 9000, 70000, Int(next() % 200_000)][Int(next() % 8)]
                sqe.sgl = SGLDescriptor(address: next() % 8 == 0 ? next() : 0, length: UInt32(length),
                                        identifier: [0x01, 0x5A, 0x00, 0x20, UInt8(truncatingIfNeeded: next())][Int(next() % 5)])
                let inCapsule = sqe.sgl.identifier == 0x01 && length <= 8192
                do {
                    switch next() % 10 {
                    case 0:  // a raw PDU of a random type and shape
                        var pdu = [UInt8](repeating: 0, count: 8 + Int(next() % 200))
                        for k in pdu.indices { pdu[k] = UInt8(truncatingIfNeeded: next()) }
                        pdu[0] = UInt8(next() % 12)
                        try q.socket.send(pdu)
                    case 1:  // H2CData for whatever
                        try q.sendRawH2CData(cid: UInt16(truncatingIfNeeded: next()), tag: UInt16(next() % 300),
                                             offset: Int(next() % 70000), bytes: [UInt8](repeating: 7, count: Int(next() % 5000) + 1),
                                             last: next() % 2 == 0)
                    default:
                        try q.sendCapsule(sqe, data: inCapsule ? [UInt8](repeating: 0xAB, count: length) : [])
                    }
                    sent += 1
                } catch { break }
            }
            // Drain whatever came back, briefly; a closed connection is a fine outcome.
            var buffer = [UInt8](repeating: 0, count: 65536)
            var pfd = pollfd(fd: q.socket.fd, events: Int16(POLLIN), revents: 0)
            while poll(&pfd, 1, 20) > 0, recv(q.socket.fd, &buffer, buffer.count, Int32(MSG_DONTWAIT)) > 0 {}
            if session % 10 == 0 {
                let data = pattern(8192, seed: UInt64(session))
                try bystander.write(lba: 4096, data: data)
                XCTAssertEqual(try bystander.read(lba: 4096, blocks: 16), data, "bystander after session \(session)")
                try bystander.keepAlive()
            }
        }
        print("StressTests.testStatefulFuzzing: \(sessions) sessions, \(sent) PDUs sent")
        XCTAssertGreaterThan(sent, 4 * sessions, "fuzzing reached past the first PDU of most sessions")
        // Still serving new hosts.
        let fresh = try harness.controller(queues: 1)
        XCTAssertEqual(try fresh.read(lba: 4096, blocks: 16), pattern(8192, seed: 390))
    }
}
