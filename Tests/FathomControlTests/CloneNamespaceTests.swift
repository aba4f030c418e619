import FathomConfig
import FathomControl
import Foundation
import NVMeInitiator
import NVMeWire
import XCTest

/// Clone namespaces over the wire: every host writes to its own copy of a shared base,
/// created on its first connect; `clone list|reset|delete` through the control socket.
final class CloneNamespaceTests: XCTestCase {
    var h: ControlHarness!
    let chunk = 65536

    override func setUpWithError() throws { h = try ControlHarness() }
    override func tearDown() { h.stop() }

    func testEachHostWritesItsOwnCopyOfTheBase() throws {
        let basePath = h.directory + "/base.img"
        let baseBytes = (0..<(16 * chunk)).map { UInt8(truncatingIfNeeded: $0 / 512) }
        FileManager.default.createFile(atPath: basePath, contents: Data(baseBytes))
        let nqn = "nqn.2026-11.io.fathom.test:clones"
        XCTAssertTrue(try h.send("subsystem.add") { $0.subsystem = nqn; $0.allowAnyHost = true; $0.ports = [1] }.ok)
        let added = try h.send("namespace.add") {
            $0.subsystem = nqn; $0.backend = "clone"; $0.path = basePath; $0.overlayDirectory = h.directory + "/overlays"
        }
        XCTAssertTrue(added.ok, added.error ?? "")
        let listed = try h.send("namespace.list").namespaces?.first { $0.subsystem == nqn }
        XCTAssertEqual(listed?.path, basePath, "a clone namespace lists its base")
        XCTAssertTrue(listed?.io?.hasPrefix("clone, base ") ?? false, listed?.io ?? "no IO text")

        var a: HostController! = try h.connect(host: ControlHarness.hostA, subsystem: nqn)
        let b = try h.connect(host: ControlHarness.hostB, subsystem: nqn)
        // Both clones exist as soon as the hosts connected.
        XCTAssertEqual(try h.send("clone.list").clones?.map(\.host), [ControlHarness.hostA, ControlHarness.hostB])
        let mineA = [UInt8](repeating: 0xA1, count: 4096), mineB = [UInt8](repeating: 0xB2, count: 4096)
        try a.write(lba: 9, data: mineA)
        try b.write(lba: 9, data: mineB)
        try a.flush()
        XCTAssertTrue(try a.read(lba: 9, blocks: 8) == mineA)
        XCTAssertTrue(try b.read(lba: 9, blocks: 8) == mineB)
        XCTAssertTrue(try a.read(lba: 0, blocks: 9) == Array(baseBytes[0..<(9 * 512)]), "the rest of the chunk is the base")
        // One Read across chunk 0 (A's overlay) and chunk 1 (the base): the engine reads it in
        // two ring operations, one per source.
        var across = Array(baseBytes[(120 * 512)..<(136 * 512)])
        XCTAssertTrue(try a.read(lba: 120, blocks: 16) == across, "overlay chunk 0, base chunk 1")
        try a.write(lba: 127, data: mineA)  // the last block of chunk 0 and 7 of chunk 1 (copied up)
        across.replaceSubrange((7 * 512)..<(15 * 512), with: mineA)
        XCTAssertTrue(try a.read(lba: 120, blocks: 16) == across)
        XCTAssertTrue(try a.read(lba: 135, blocks: 121) == Array(baseBytes[(135 * 512)..<(256 * 512)]), "rest of chunk 1: the base")
        XCTAssertTrue([UInt8](try Data(contentsOf: URL(fileURLWithPath: basePath))) == baseBytes, "the base never changes")
        let id = try a.identify(cns: 0, nsid: 1)
        XCTAssertEqual(id[99] & 0x1, 0, "NSATTR: writable")
        XCTAssertEqual(id[33] & 0x7, 0, "DLFEAT: deallocated blocks read the base, not zeros")
        // NUSE is what each host wrote (nvme list's usage): A two chunks, B one.
        func nuse(_ c: HostController) throws -> UInt64 {
            try c.identify(cns: 0, nsid: 1)[16..<24].enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        }
        XCTAssertEqual(try nuse(a), UInt64(2 * chunk / 512))
        XCTAssertEqual(try nuse(b), UInt64(chunk / 512))

        let list = try h.send("clone.list").clones ?? []
        XCTAssertEqual(list.first { $0.host == ControlHarness.hostA }?.writtenBytes, UInt64(2 * chunk))
        XCTAssertTrue(list.allSatisfy(\.connected))
        let busy = try h.send("clone.reset") { $0.subsystem = nqn; $0.nsid = 1; $0.host = ControlHarness.hostA }
        XCTAssertFalse(busy.ok)
        XCTAssertTrue(busy.error?.contains("disconnect it first") ?? false, busy.error ?? "")

        a = nil  // the host disconnects (its sockets close)
        XCTAssertTrue(h.eventually { !h.server.target.liveControllers.contains { $0.hostNQN == ControlHarness.hostA && $0.subsystem.nqn == nqn } })
        // Reconnecting keeps the host's data; a reset gives it the base back.
        var again: HostController! = try h.connect(host: ControlHarness.hostA, subsystem: nqn)
        XCTAssertTrue(try again.read(lba: 9, blocks: 8) == mineA, "the host's writes survive its reconnect")
        again = nil
        XCTAssertTrue(h.eventually { !h.server.target.liveControllers.contains { $0.hostNQN == ControlHarness.hostA && $0.subsystem.nqn == nqn } })
        let reset = try h.send("clone.reset") { $0.subsystem = nqn; $0.nsid = 1; $0.host = ControlHarness.hostA }
        XCTAssertTrue(reset.ok, reset.error ?? "")
        let fresh = try h.connect(host: ControlHarness.hostA, subsystem: nqn)
        XCTAssertTrue(try fresh.read(lba: 9, blocks: 8) == Array(baseBytes[(9 * 512)..<(17 * 512)]), "after a reset: the base")
        XCTAssertTrue(try b.read(lba: 9, blocks: 8) == mineB, "host B's clone is untouched by A's reset")
    }
}
