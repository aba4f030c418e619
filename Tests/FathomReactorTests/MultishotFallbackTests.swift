@testable import FathomReactor
import FathomTarget
import NVMeInitiator
import XCTest

/// A kernel with provided-buffer rings but without multishot recv (5.19) fails the first
/// multishot recv with EINVAL. Simulated on this kernel with a recv flag bit it does not know,
/// which it refuses the same way: the connection that tried gives its ring back and goes on
/// with single recvs, and so does every connection after it; hosts see nothing of it.
final class MultishotFallbackTests: XCTestCase {
    override func tearDown() { Ring.extraMultishotRecvFlagsForTests = 0 }

    func testRefusedMultishotRecvFallsBackToSingleRecvs() throws {
        Ring.extraMultishotRecvFlagsForTests = 1 << 15
        var settings = TargetSettings()
        settings.receiveMode = .multishot
        let h = try TargetHarness(sizeMiB: 16, settings: settings, reactors: 1)
        defer { h.stop() }
        let c = try h.controller(queues: 2)
        for k in 0..<16 {
            let data = pattern(512 << (k % 6), seed: UInt64(k))
            try c.write(queue: k % 2, lba: UInt64(k) * 256, data: data)
            XCTAssertEqual(try c.read(queue: (k + 1) % 2, lba: UInt64(k) * 256, blocks: data.count / 512), data, "round \(k)")
        }
        let second = try h.controller(queues: 1)
        XCTAssertEqual(try second.read(lba: 0, blocks: 1), pattern(512, seed: 0))

        let counts = h.server.multishotReceiveCounts
        XCTAssertEqual(counts.arms, 1, "one multishot recv tried (the first connection's), refused")
        XCTAssertEqual(counts.connections, 1, "no buffer ring for the connections after the refusal")
    }
}
