import Dispatch
import FathomConfig
@testable import FathomReactor
@testable import FathomStorage
import Foundation
import Logging
import NVMeInitiator
import NVMeWire
import Synchronization
import XCTest

/// A host's first Connect opens its clones (files created, a map read back), which on a slow
/// disk takes a while. It runs on a storage worker and the Connect completes when it is done:
/// meanwhile the one reactor keeps serving the other host, including that host's new queues,
/// whose first commands look up their own clone while the first host's is still being opened.
final class CloneConnectTests: XCTestCase {
    let nqn = "nqn.2026-11.io.fathom.test:clone-connect"
    let hostA = "nqn.2026-11.io.fathom.test:host-slow-disk"
    let hostB = "nqn.2026-11.io.fathom.test:host-other"
    var directory: String!
    var base: [UInt8] = []
    var server: FathomServer!
    /// Holds host A's clone opening; opened in tearDown too, so a failed test leaves no worker parked.
    let gate = DispatchSemaphore(value: 0)

    override func setUpWithError() throws {
        var template = Array("/tmp/fathom-clone-connect-XXXXXX".utf8CString)
        directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        base = pattern(1 << 20, seed: 0xC0)
        XCTAssertTrue(FileManager.default.createFile(atPath: directory + "/base.img", contents: Data(base)))
        let config = try TargetConfig.parse(json: Array("""
        {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "0", "trtype": "tcp"}, "portid": 1, "subsystems": ["\(nqn)"]}],
         "subsystems": [{"nqn": "\(nqn)", "attr": {"allow_any_host": "1"}, "namespaces": [
            {"nsid": 1, "device": {"backend": "clone", "path": "\(directory!)/base.img", "overlay_dir": "\(directory!)/overlays",
                                   "nguid": "5a4b3c2d1e0f11223344556677889900", "uuid": "6b5a4c3d-2e1f-4a0b-9c8d-7e6f5a4b3c2d"}},
            {"nsid": 2, "device": {"backend": "memory", "size": "8M"}}]}]}
        """.utf8))
        var logger = Logger(label: "clone-connect") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .critical
        server = try FathomServer(config: config, reactorCount: 1, logger: logger)
        try server.start()
    }

    override func tearDown() {
        for _ in 0..<4 { gate.signal() }
        server.stop()
        server = nil
        try? FileManager.default.removeItem(atPath: directory)
    }

    private var clones: CloneSet {
        (server.target.subsystem(nqn)!.namespace(1)!.backend as! StorageNamespace).clones!
    }

    private func connect(_ host: String, queues: Int) throws -> HostController {
        let c = try HostController(host: "127.0.0.1", port: server.boundPorts[0], subsystemNQN: nqn, hostNQN: host)
        try c.enable()
        try c.createIOQueues(queues)
        return c
    }

    func testOpeningAHostsClonesStallsNoOtherHost() throws {
        let b = try connect(hostB, queues: 1)
        try b.write(lba: 8, data: pattern(4096, seed: 1))
        let entered = DispatchSemaphore(value: 0), gate = self.gate, slowHost = hostA
        clones.willOpen.withLock { $0 = { host in
            guard host == slowHost else { return }
            entered.signal()
            gate.wait()
        } }
        let connected = DispatchSemaphore(value: 0)
        let a = Mutex<Result<HostController, Error>?>(nil)
        DispatchQueue.global().async {
            a.withLock { $0 = Result { try HostController(host: "127.0.0.1", port: self.server.boundPorts[0],
                                                           subsystemNQN: self.nqn, hostNQN: self.hostA) } }
            connected.signal()
        }
        XCTAssertEqual(entered.wait(timeout: .now() + 5), .success, "A's clone is being opened")
        // While it is: B's clone, the memory namespace, B's admin queue, and a second
        // controller of B (its Connect and its I/O queue's first command look up B's clone)
        // are all served by the one reactor.
        XCTAssertEqual(try b.read(lba: 8, blocks: 8), pattern(4096, seed: 1))
        try b.write(nsid: 2, lba: 0, data: pattern(4096, seed: 2))
        XCTAssertEqual(try b.identify(cns: 0, nsid: 1).count, 4096)
        let b2 = try connect(hostB, queues: 1)
        XCTAssertEqual(try b2.read(lba: 8, blocks: 8), pattern(4096, seed: 1))
        XCTAssertEqual(clones.writtenBlocks(host: hostB), 128, "B's chunk, looked up meanwhile")
        XCTAssertEqual(connected.wait(timeout: .now()), .timedOut, "A's Connect waits for its clone")
        gate.signal()
        XCTAssertEqual(connected.wait(timeout: .now() + 5), .success)
        let host = try XCTUnwrap(a.withLock { $0 }).get()
        try host.enable()
        try host.createIOQueues(1)
        XCTAssertEqual(try host.read(lba: 8, blocks: 8), Array(base[4096..<8192]), "A sees the base, not B's write")
        try host.write(lba: 0, data: pattern(512, seed: 3))
        XCTAssertEqual(try host.read(lba: 0, blocks: 1), pattern(512, seed: 3))
    }

    /// A host that goes away while its Connect waits for its clone: the late result is
    /// dropped, its controller is torn down once the worker is done, the other host is
    /// untouched, and the host can connect again.
    func testAHostThatLeavesWhileItsCloneOpensIsTornDownCleanly() throws {
        let b = try connect(hostB, queues: 1)
        let entered = DispatchSemaphore(value: 0), gate = self.gate, slowHost = hostA
        clones.willOpen.withLock { $0 = { host in
            guard host == slowHost else { return }
            entered.signal()
            gate.wait()
        } }
        var admin: QueuePair? = try QueuePair(host: "127.0.0.1", port: server.boundPorts[0], queueID: 0)
        _ = try admin!.submit(SubmissionQueueEntry(opcode: 0x7F, commandID: 0, nsid: 1, cdw11: 31, cdw12: 5000),
                              write: connectData(host: hostA))
        XCTAssertEqual(entered.wait(timeout: .now() + 5), .success, "A's clone is being opened")
        XCTAssertEqual(server.target.controllerCount, 2)
        admin = nil  // the socket closes with the Connect still waiting
        usleep(100_000)
        XCTAssertEqual(try b.read(lba: 0, blocks: 8), Array(base[0..<4096]))
        gate.signal()
        var left = 50
        while server.target.controllerCount != 1 && left > 0 { usleep(100_000); left -= 1 }
        XCTAssertEqual(server.target.controllerCount, 1, "A's controller is gone, B's is not")
        clones.willOpen.withLock { $0 = nil }
        let a = try connect(hostA, queues: 1)
        XCTAssertEqual(try a.read(lba: 0, blocks: 8), Array(base[0..<4096]))
        XCTAssertEqual(try b.read(lba: 0, blocks: 8), Array(base[0..<4096]))
    }

    /// Connect data (NVMe-oF 1.1, Figure 20) for `host`, asking for a new controller.
    private func connectData(host: String) -> [UInt8] {
        var d = [UInt8](repeating: 0, count: 1024)
        for k in 0..<16 { d[k] = UInt8(0xA0 + k) }  // host identifier
        d[16] = 0xFF
        d[17] = 0xFF
        for (k, c) in nqn.utf8.enumerated() { d[256 + k] = c }
        for (k, c) in host.utf8.enumerated() { d[512 + k] = c }
        return d
    }
}
