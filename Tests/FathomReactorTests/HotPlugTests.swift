import FathomConfig
import FathomReactor
import Logging
import NVMeInitiator
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Namespaces added, resized and removed while hosts stay connected: configuration reload,
/// Namespace Attribute Changed events and the Changed Namespace List.
final class HotPlugTests: XCTestCase {
    let nqn = "nqn.2026-11.io.fathom.test:hotplug"
    var directory = ""
    var server: FathomServer!

    func config(_ namespaces: String) throws -> TargetConfig {
        try TargetConfig.parse(json: Array("""
        {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "0", "trtype": "tcp"}, "portid": 1, "subsystems": ["\(nqn)"]}],
         "subsystems": [{"nqn": "\(nqn)", "attr": {"allow_any_host": "1"}, "namespaces": [\(namespaces)]}]}
        """.utf8))
    }

    func file(_ name: String, mib: Int) -> String {
        let path = directory + "/" + name
        let fd = open(path, O_CREAT | O_RDWR, 0o644)
        ftruncate(fd, off_t(mib << 20))
        Glibc.close(fd)
        return path
    }

    override func setUpWithError() throws {
        var template = Array("/tmp/fathom-hotplug-XXXXXX".utf8CString)
        directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        let one = file("ns1.img", mib: 16)
        var logger = Logger(label: "hotplug-test") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .critical
        server = try FathomServer(config: try config(#"{"nsid": 1, "device": {"path": "\#(one)"}}"#), reactorCount: 2, logger: logger)
        try server.start()
    }

    override func tearDown() {
        server.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func host(enableNotices: Bool) throws -> HostController {
        let c = try HostController(host: "127.0.0.1", port: server.boundPorts[0], subsystemNQN: nqn)
        try c.enable()
        if enableNotices { XCTAssertTrue(try c.setFeature(0x0B, 1 << 8).status.isSuccess) }
        try c.createIOQueues(1)
        return c
    }

    private func changedList(_ c: HostController) throws -> [UInt32] {
        let log = try c.getLogPage(0x04, length: 4096)
        return log.withUnsafeBytes { b in (0..<1024).map { b.baseAddress!.le32($0 * 4) }.filter { $0 != 0 } }
    }

    private func activeList(_ c: HostController) throws -> [UInt32] {
        let list = try c.identify(cns: 2)
        return list.withUnsafeBytes { b in (0..<1024).map { b.baseAddress!.le32($0 * 4) }.filter { $0 != 0 } }
    }

    func testAddResizeRemoveWithEvents() throws {
        let one = directory + "/ns1.img"
        let c = try host(enableNotices: true)
        let quiet = try host(enableNotices: false)
        let aer = try c.admin.submit(SubmissionQueueEntry(opcode: 0x0C, commandID: 700))
        let quietAER = try quiet.admin.submit(SubmissionQueueEntry(opcode: 0x0C, commandID: 701))

        // Hot add: a memory namespace 2.
        let added = try config(#"{"nsid": 1, "device": {"path": "\#(one)"}}, {"nsid": 2, "device": {"backend": "memory", "size": "8M"}}"#)
        let notes = try server.apply(added)
        XCTAssertTrue(notes.contains { $0.contains("namespace 2 added") }, "\(notes)")
        let event = try c.admin.wait(aer)
        XCTAssertEqual(event.cqe.dw0, 0x0004_0002, "notice: namespace attribute changed, log 04h")
        XCTAssertEqual(try changedList(c), [2])
        XCTAssertEqual(try changedList(c), [], "reading the log clears it")
        XCTAssertEqual(try activeList(c), [1, 2])
        let data = pattern(4096, seed: 5)
        try c.write(nsid: 2, lba: 8, data: data)
        XCTAssertEqual(try c.read(nsid: 2, lba: 8, blocks: 8), data)
        // The host that did not enable notices gets no event, but sees the namespace.
        usleep(300_000)
        try quiet.keepAlive()
        XCTAssertFalse(quiet.admin.hasCompleted(quietAER))
        XCTAssertEqual(try activeList(quiet), [1, 2])

        // Resize: the backing file grew; the same configuration is reloaded.
        let aer2 = try c.admin.submit(SubmissionQueueEntry(opcode: 0x0C, commandID: 702))
        XCTAssertEqual(truncate(one, 32 << 20), 0)
        try server.apply(added)
        XCTAssertEqual(try c.admin.wait(aer2).cqe.dw0, 0x0004_0002)
        XCTAssertEqual(try changedList(c), [1])
        let ns = try c.identify(cns: 0, nsid: 1)
        XCTAssertEqual(ns.withUnsafeBytes { $0.baseAddress!.le64(0) }, UInt64(32 << 20) / 512, "NSZE grew")
        try c.write(lba: UInt64(20 << 20) / 512, data: data)

        // Hot remove.
        let aer3 = try c.admin.submit(SubmissionQueueEntry(opcode: 0x0C, commandID: 703))
        try server.apply(try config(#"{"nsid": 1, "device": {"path": "\#(one)"}}"#))
        XCTAssertEqual(try c.admin.wait(aer3).cqe.dw0, 0x0004_0002)
        XCTAssertEqual(try changedList(c), [2])
        XCTAssertEqual(try activeList(c), [1])
        XCTAssertThrowsError(try c.read(nsid: 2, lba: 0, blocks: 1)) { XCTAssertEqual($0 as? HostError, .failed("Read", .invalidNamespace)) }
        XCTAssertEqual(try c.read(lba: UInt64(20 << 20) / 512, blocks: 8), data)
    }

    func testFailedReloadChangesNothing() throws {
        let c = try host(enableNotices: true)
        let one = directory + "/ns1.img"
        XCTAssertThrowsError(try server.apply(try config(
            #"{"nsid": 1, "device": {"path": "\#(one)"}}, {"nsid": 3, "device": {"path": "\#(directory)/missing.img"}}"#))) {
            XCTAssertTrue("\($0)".contains("missing.img"))
        }
        XCTAssertEqual(try activeList(c), [1])
        XCTAssertEqual(try changedList(c), [])
    }
}
