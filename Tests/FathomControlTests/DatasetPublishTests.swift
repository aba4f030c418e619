import FathomConfig
import FathomControl
import FathomDataset
import Foundation
import NVMeInitiator
import NVMeWire
import XCTest

/// `fathomctl dataset publish` as the daemon executes it: a new subsystem, a read-only
/// namespace whose identity is the image digest, idempotent, readable by many hosts.
final class DatasetPublishTests: XCTestCase {
    var h: ControlHarness!

    override func setUpWithError() throws { h = try ControlHarness() }
    override func tearDown() { h.stop() }

    func testPublishCreatesAReadOnlyNamespaceNamedByTheDigestOnce() throws {
        let src = h.directory + "/src"
        try FileManager.default.createDirectory(atPath: src + "/d", withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: src + "/d/file.bin", contents: Data((0..<70_000).map { UInt8(truncatingIfNeeded: $0) }))
        let image = h.directory + "/ds.ext4"
        var builder = DatasetBuilder(source: src, image: image, format: .ext4)
        builder.progress = { _ in }
        let manifest = try builder.build()
        let nqn = "nqn.2026-11.io.fathom.test:published"
        func publish() throws -> ControlResponse {
            try h.send("dataset.publish") { $0.subsystem = nqn; $0.path = image; $0.sha256 = manifest.sha256 }
        }
        let first = try publish()
        XCTAssertTrue(first.ok, first.error ?? "")
        XCTAssertEqual(first.changes?.contains("subsystem \(nqn) added"), true, "\(first.changes ?? [])")
        XCTAssertEqual(try publish().changes, [], "publishing again changes nothing")

        let ns = try XCTUnwrap(try h.send("namespace.list") { $0.subsystem = nqn }.namespaces?.first)
        XCTAssertTrue(ns.readonly)
        XCTAssertEqual(ns.nguid, String(manifest.sha256.prefix(32)))
        // Any host (no --hosts), on the ports that serve subsystems; the image reads back.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: image))
        for host in [ControlHarness.hostA, ControlHarness.hostB] {
            let c = try h.connect(host: host, subsystem: nqn)
            XCTAssertEqual(try c.read(lba: 2, blocks: 8), [UInt8](bytes[1024..<5120]))
            let w = try c.ioQueues[0].execute(HostController.writeCommand(nsid: 1, lba: 0, blocks: 1), write: [UInt8](repeating: 1, count: 512))
            XCTAssertEqual(w.cqe.status, .namespaceWriteProtected)
        }
        // The same image cannot be published under a second identity elsewhere.
        let other = try h.send("dataset.publish") { $0.subsystem = "nqn.2026-11.io.fathom.test:other"; $0.path = image; $0.sha256 = manifest.sha256 }
        XCTAssertFalse(other.ok)
        XCTAssertTrue(other.error?.contains("already published in \(nqn)") ?? false, other.error ?? "")
    }
}
