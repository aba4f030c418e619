import FathomConfig
import FathomControl
import NVMeInitiator
import NVMeWire
import XCTest

/// ANA: groups and states per port, the ANA log, the path status on I/O and the change
/// event, driven by `fathomctl port ana` through the control socket.
final class AsymmetricAccessTests: XCTestCase {
    var h: ControlHarness!

    override func setUpWithError() throws { h = try ControlHarness() }
    override func tearDown() { h.stop() }

    private func anaLog(_ c: HostController) throws -> (changeCount: UInt64, groups: [ANAGroupReport]) {
        try XCTUnwrap(ANALog.decode(try c.getLogPage(LogPage.asymmetricAccess, length: 4096)))
    }

    func testIdentifyReportsANAAndTheDefaultGroup() throws {
        let c = try h.connect(host: ControlHarness.hostA)
        let id = try c.identify(cns: 1)
        XCTAssertEqual(id[76] & 0x0B, 0x0B, "CMIC: multi-port, multi-controller, ANA reporting")
        XCTAssertEqual(id[342], ANALog.transitionTimeSeconds, "ANATT")
        XCTAssertEqual(id[343], 0x1F, "ANACAP")
        XCTAssertEqual(id.withUnsafeBytes { $0.baseAddress!.le32(344) }, 128, "ANAGRPMAX")
        XCTAssertEqual(id.withUnsafeBytes { $0.baseAddress!.le32(540) }, 1024, "MNAN")
        XCTAssertNotEqual(id.withUnsafeBytes { $0.baseAddress!.le32(92) } & (1 << 11), 0, "OAES: ANA change notices")
        XCTAssertEqual(try c.identify(cns: 0, nsid: 1).withUnsafeBytes { $0.baseAddress!.le32(92) }, 1, "ANAGRPID")
        let log = try anaLog(c)
        XCTAssertEqual(log.groups, [ANAGroupReport(groupID: 1, state: .optimized, changeCount: log.changeCount, namespaceIDs: [1])])
    }

    func testInaccessibleGroupFailsIOWithAPathErrorUntilOptimized() throws {
        XCTAssertTrue(try h.send("port.ana") { $0.port = 1; $0.anaGroup = 2; $0.state = "inaccessible" }.ok)
        let image = h.makeImage("ana.img", mib: 2)
        let added = try h.send("namespace.add") { $0.subsystem = ControlHarness.nqn; $0.nsid = 2; $0.path = image; $0.anaGroup = 2 }
        XCTAssertTrue(added.ok, added.error ?? "")
        let c = try h.connect(host: ControlHarness.hostA)
        var log = try anaLog(c)
        XCTAssertEqual(log.groups.map(\.groupID), [1, 2])
        XCTAssertEqual(log.groups[1].state, .inaccessible)
        XCTAssertEqual(log.groups[1].namespaceIDs, [2])
        let r = try c.ioQueues[0].execute(HostController.readCommand(nsid: 2, lba: 0, blocks: 1), readLength: 512)
        XCTAssertEqual(r.cqe.status, .asymmetricAccessInaccessible)
        XCTAssertFalse(r.cqe.status.doNotRetry, "path errors are retryable on another path")
        XCTAssertEqual(try c.read(nsid: 1, lba: 0, blocks: 1).count, 512, "group 1 still serves")

        _ = try c.setFeature(0x0B, 1 << 11)
        let aer = try c.admin.submit(SubmissionQueueEntry(opcode: 0x0C, commandID: 910))
        let changed = try h.send("port.ana") { $0.port = 1; $0.anaGroup = 2; $0.state = "optimized" }
        XCTAssertEqual(changed.changes, ["port 1: ANA group 2 is now optimized"])
        XCTAssertEqual(try c.admin.wait(aer).cqe.dw0, 0x000C_0302)
        let before = log.changeCount
        log = try anaLog(c)
        XCTAssertGreaterThan(log.changeCount, before)
        XCTAssertEqual(log.groups[1].state, .optimized)
        XCTAssertEqual(try c.read(nsid: 2, lba: 0, blocks: 1), [UInt8](repeating: 0, count: 512))
        XCTAssertTrue(try h.send("port.list").ports?.first?.anaGroups?.contains("2=optimized") ?? false)
    }

    func testUnknownGroupOrStateIsRefused() throws {
        let image = h.makeImage("x.img", mib: 1)
        let bad = try h.send("namespace.add") { $0.subsystem = ControlHarness.nqn; $0.path = image; $0.anaGroup = 9 }
        XCTAssertFalse(bad.ok)
        XCTAssertTrue(bad.error?.contains("names an ANA group no port defines") ?? false, bad.error ?? "")
        XCTAssertEqual(try h.send("port.ana") { $0.port = 1; $0.anaGroup = 2; $0.state = "sleepy" }.error,
                       "--state sleepy is not one of optimized, non-optimized, inaccessible, persistent-loss, change")
    }
}
