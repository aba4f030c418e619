import FathomReactor
import FathomTarget
import NVMeInitiator
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// `--busy-poll-us`: a reactor polls its ring for a while before sleeping. Commands must be
/// served as without it — one at a time (where the poll catches the next command) and
/// pipelined — and an idle reactor must still go to sleep rather than spin.
final class BusyPollTests: XCTestCase {
    private func harness() throws -> TargetHarness {
        var settings = TargetSettings()
        settings.busyPollMicroseconds = 500
        return try TargetHarness(sizeMiB: 64, settings: settings, reactors: 1)
    }

    func testCommandsOneAtATimeAndPipelined() throws {
        let h = try harness()
        defer { h.stop() }
        let c = try h.controller(queues: 2)
        for k in 0..<50 {
            let data = pattern(4096, seed: UInt64(k))
            try c.write(lba: UInt64(k) * 8, data: data)
            XCTAssertEqual(try c.read(lba: UInt64(k) * 8, blocks: 8), data)
        }
        let q = c.ioQueues[1]
        var cids: [UInt16: Int] = [:]
        for k in 0..<50 {
            cids[try q.submit(HostController.readCommand(nsid: 1, lba: UInt64(k) * 8, blocks: 8), readLength: 4096)] = k
        }
        for (cid, k) in cids {
            let r = try q.wait(cid)
            XCTAssertTrue(r.status.isSuccess)
            XCTAssertEqual(r.data, pattern(4096, seed: UInt64(k)))
        }
    }

    func testAnIdleReactorSleeps() throws {
        let h = try harness()
        defer { h.stop() }
        let c = try h.controller(queues: 1)
        try c.write(lba: 0, data: pattern(4096, seed: 1))
        // Connected and idle for 2 s: a reactor that never stopped polling would use one core
        // the whole time (the test's own threads wait in the kernel meanwhile).
        let before = Self.processCPUSeconds()
        usleep(2_000_000)
        let used = Self.processCPUSeconds() - before
        XCTAssertLessThan(used, 1.0, "the process used \(used) s of CPU in 2 s of idleness")
        XCTAssertEqual(try c.read(lba: 0, blocks: 8), pattern(4096, seed: 1))
    }

    private static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
    }
}
