import FathomReactor
import FathomTarget
import NVMeInitiator
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// SENDMSG_ZC for read data: the slots of a zero-copy batch stay held until the kernel's
/// notification, batches of several commands and short sends still carry the right bytes, a
/// connection dropped with notifications outstanding is torn down cleanly, and `auto` stops
/// using zero copy once the kernel reports it copied (which it does on loopback).
final class ZeroCopySendTests: XCTestCase {
    private func harness(_ policy: ZeroCopySendPolicy, minBytes: Int = 4096) throws -> TargetHarness {
        var settings = TargetSettings()
        settings.zeroCopySend = policy
        settings.zeroCopySendMinBytes = minBytes
        return try TargetHarness(sizeMiB: 64, settings: settings, reactors: 1)
    }

    func testAlwaysCarriesPipelinedReadsOfEverySizeIntact() throws {
        let h = try harness(.always)
        defer { h.stop() }
        let c = try h.controller(queues: 2)
        let sizes = [4096, 8192, 65536, 131072, 524288]
        var expected: [Int: [UInt8]] = [:]
        for (k, size) in sizes.enumerated() {
            let data = pattern(size, seed: UInt64(40 + k))
            try c.write(lba: UInt64(k) * 2048, data: data)
            expected[k] = data
        }
        // Pipelined: many responses (and their data) per send, a full queue's worth held.
        for round in 0..<4 {
            let q = c.ioQueues[round % 2]
            var cids: [UInt16: Int] = [:]
            for n in 0..<100 {
                let k = (n + round) % sizes.count
                cids[try q.submit(HostController.readCommand(nsid: 1, lba: UInt64(k) * 2048, blocks: sizes[k] / 512),
                                  readLength: sizes[k])] = k
            }
            for (cid, k) in cids {
                let r = try q.wait(cid)
                XCTAssertTrue(r.status.isSuccess)
                XCTAssertEqual(r.data, expected[k], "round \(round) size \(sizes[k])")
            }
        }
        XCTAssertTrue(h.eventually { h.server.zeroCopySendCounts.sent > 0 }, "no zero-copy send was made")
    }

    func testAlwaysWithDigestsAndAfterAbruptDisconnect() throws {
        let h = try harness(.always)
        defer { h.stop() }
        let c = try h.controller(queues: 1, headerDigest: true, dataDigest: true)
        let data = pattern(256 * 1024, seed: 9)
        try c.write(lba: 0, data: data)
        XCTAssertEqual(try c.read(lba: 0, blocks: 512), data)
        // Reads queued, then the host vanishes with their sends (and notifications) in flight.
        let q = c.ioQueues[0]
        for _ in 0..<64 { _ = try q.submit(HostController.readCommand(nsid: 1, lba: 0, blocks: 1024), readLength: 512 * 1024) }
        shutdown(q.socket.fd, Int32(SHUT_RDWR))
        // The target goes on serving others.
        let other = try h.controller(queues: 1)
        XCTAssertEqual(try other.read(lba: 0, blocks: 512), data)
        XCTAssertTrue(h.eventually { h.target.connectedIOQueues(of: c.controllerID) == 0 })
    }

    func testAutoStopsOnceTheKernelCopies() throws {
        let h = try harness(.auto)
        defer { h.stop() }
        let c = try h.controller(queues: 1)
        let data = pattern(128 * 1024, seed: 3)
        try c.write(lba: 0, data: data)
        for _ in 0..<20 { XCTAssertEqual(try c.read(lba: 0, blocks: 256), data) }
        // Loopback: the kernel copies every zero-copy send and says so; each connection (admin:
        // Identify data is 4 KiB; one I/O queue) tries until the first notification is handled
        // (a send or two) and then sends plainly.
        // Notifications arrive after the data was delivered: wait until the count holds still.
        var counts = h.server.zeroCopySendCounts
        XCTAssertTrue(h.eventually {
            usleep(100_000)
            let now = h.server.zeroCopySendCounts
            defer { counts = now }
            return now.sent > 0 && now == counts
        })
        XCTAssertEqual(counts.copied, counts.sent, "loopback should report every zero-copy send as copied")
        XCTAssertLessThanOrEqual(counts.sent, 4)
        for _ in 0..<20 { XCTAssertEqual(try c.read(lba: 0, blocks: 256), data) }
        XCTAssertEqual(h.server.zeroCopySendCounts.sent, counts.sent, "auto kept using SEND_ZC after the kernel reported copying")
    }

    func testNeverMakesNoZeroCopySend() throws {
        let h = try harness(.never)
        defer { h.stop() }
        let c = try h.controller(queues: 1)
        let data = pattern(128 * 1024, seed: 4)
        try c.write(lba: 0, data: data)
        XCTAssertEqual(try c.read(lba: 0, blocks: 256), data)
        XCTAssertEqual(h.server.zeroCopySendCounts.sent, 0)
    }
}
