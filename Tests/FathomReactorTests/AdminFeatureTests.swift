import NVMeInitiator
import NVMeWire
import XCTest

/// Admin features beyond the basics: Write Protect, Host Behavior, the feature effects log,
/// Abort of a held AER.
final class AdminFeatureTests: XCTestCase {
    var harness: TargetHarness!

    override func setUpWithError() throws { harness = try TargetHarness() }
    override func tearDown() { harness.stop() }

    func testWriteProtectFeatureTogglesNamespaceAndNotifies() throws {
        let c = try harness.controller(queues: 1)
        let other = try harness.controller(queues: 1)
        XCTAssertTrue(try other.setFeature(0x0B, 1 << 8).status.isSuccess)
        let aer = try other.admin.submit(SubmissionQueueEntry(opcode: 0x0C, commandID: 600))
        let wp = { (state: UInt32) in
            try c.admin.execute(SubmissionQueueEntry(opcode: 0x09, commandID: 0, nsid: 1, cdw10: 0x84, cdw11: state)).status
        }
        XCTAssertEqual(try wp(1), .success)
        XCTAssertEqual(try c.identify(cns: 0, nsid: 1)[99] & 1, 1, "NSATTR write protected")
        XCTAssertThrowsError(try other.write(lba: 0, data: pattern(512, seed: 1))) {
            XCTAssertEqual($0 as? HostError, .failed("Write", .namespaceWriteProtected))
        }
        XCTAssertEqual(try other.admin.wait(aer).cqe.dw0, 0x0004_0002, "other hosts learn of it")
        let get = try c.admin.execute(SubmissionQueueEntry(opcode: 0x0A, commandID: 0, nsid: 1, cdw10: 0x84))
        XCTAssertEqual(get.cqe.dw0, 1)
        XCTAssertEqual(try wp(2), .invalidField, "until-power-cycle is not offered")
        XCTAssertEqual(try wp(0), .success)
        try other.write(lba: 0, data: pattern(512, seed: 1))
        // A namespace configured read-only cannot be unprotected.
        let ro = try harness.controller(queues: 0, hostNQN: TargetHarness.allowedHost, subsystem: TargetHarness.restrictedNQN)
        XCTAssertEqual(try ro.admin.execute(SubmissionQueueEntry(opcode: 0x09, commandID: 0, nsid: 1, cdw10: 0x84, cdw11: 0)).status,
                       .featureNotChangeable)
        XCTAssertEqual(try c.identify(cns: 1)[531], 1, "NWPC")
    }

    func testHostBehaviorAndFeatureEffectsLog() throws {
        let c = try harness.controller(queues: 0)
        var behavior = [UInt8](repeating: 0, count: 512)
        behavior[0] = 1  // ACRE
        XCTAssertTrue(try c.admin.execute(SubmissionQueueEntry(opcode: 0x09, commandID: 0, cdw10: 0x16), write: behavior).status.isSuccess)
        let r = try c.admin.execute(SubmissionQueueEntry(opcode: 0x0A, commandID: 0, cdw10: 0x16), readLength: 512)
        XCTAssertEqual(r.data, behavior)
        let effects = try c.getLogPage(0x12, length: 1024)
        for fid in [0x06, 0x07, 0x0B, 0x0E, 0x0F, 0x16, 0x84] { XCTAssertEqual(effects[fid * 4] & 1, 1, "feature \(fid) supported") }
        XCTAssertEqual(effects[0x08 * 4], 0, "interrupt coalescing is not")
        XCTAssertEqual(effects[0x84 * 4 + 2] & 0x10, 0x10, "Write Protect has namespace scope")
        XCTAssertEqual(try c.getLogPage(0x00, length: 1024)[0x12 * 4], 1)
        // Unsupported features are refused, never ignored.
        for fid: UInt8 in [0x03, 0x08, 0x09, 0x0C, 0x0D, 0x10, 0x81, 0x82, 0x83] {
            XCTAssertFalse(try c.setFeature(fid, 0).status.isSuccess, "set feature \(fid)")
        }
    }

    func testAbortOfAHeldAsyncEventRequest() throws {
        let c = try harness.controller(queues: 0)
        let aer = try c.admin.submit(SubmissionQueueEntry(opcode: 0x0C, commandID: 900))
        let abort = try c.admin.execute(SubmissionQueueEntry(opcode: 0x08, commandID: 0, cdw10: UInt32(900) << 16))
        XCTAssertEqual(abort.cqe.dw0 & 1, 0, "aborted")
        XCTAssertEqual(try c.admin.wait(aer).status, .abortRequested)
        // A command that is not outstanding: "not aborted".
        XCTAssertEqual(try c.admin.execute(SubmissionQueueEntry(opcode: 0x08, commandID: 0, cdw10: UInt32(901) << 16)).cqe.dw0 & 1, 1)
    }
}
