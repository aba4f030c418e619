import FathomConfig
import FathomReactor
import Logging
import NVMeInitiator
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Per-namespace visibility per host (SPDK's masking, which nvmet lacks): a host sees, lists
/// and reaches only the namespaces it is allowed.
final class NamespaceMaskingTests: XCTestCase {
    private func startServer(_ config: TargetConfig) throws -> FathomServer {
        var logger = Logger(label: "masking-test") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .critical
        let server = try FathomServer(config: config, reactorCount: 1, logger: logger)
        try server.start()
        return server
    }

    /// A host connected to `server`'s subsystem `nqn` with one I/O queue.
    private func connect(_ server: FathomServer, _ nqn: String, as hostNQN: String) throws -> HostController {
        let c = try HostController(host: "127.0.0.1", port: server.boundPorts[0], subsystemNQN: nqn, hostNQN: hostNQN)
        try c.enable()
        try c.createIOQueues(1)
        return c
    }

    func testHostsSeeOnlyTheirNamespaces() throws {
        let nqn = "nqn.2026-11.io.fathom.test:masked"
        let a = "nqn.2026-11.io.fathom.test:host-a-000000000000"
        let b = "nqn.2026-11.io.fathom.test:host-b-000000000000"
        let config = try TargetConfig.parse(json: Array("""
        {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "0", "trtype": "tcp"}, "portid": 1, "subsystems": ["\(nqn)"]}],
         "subsystems": [{"nqn": "\(nqn)", "attr": {"allow_any_host": "1"}, "namespaces": [
            {"nsid": 1, "device": {"backend": "memory", "size": "4M"}},
            {"nsid": 2, "device": {"backend": "memory", "size": "4M"}, "allowed_hosts": ["\(a)"]},
            {"nsid": 3, "device": {"backend": "memory", "size": "4M"}, "allowed_hosts": ["\(b)"]}]}]}
        """.utf8))
        let server = try startServer(config)
        defer { server.stop() }
        func active(_ c: HostController) throws -> [UInt32] {
            try c.identify(cns: 2).withUnsafeBytes { b in (0..<1024).map { b.baseAddress!.le32($0 * 4) }.filter { $0 != 0 } }
        }
        let ha = try connect(server, nqn, as: a), hb = try connect(server, nqn, as: b)
        XCTAssertEqual(try active(ha), [1, 2])
        XCTAssertEqual(try active(hb), [1, 3])
        try ha.write(nsid: 2, lba: 0, data: pattern(512, seed: 1))
        XCTAssertThrowsError(try hb.read(nsid: 2, lba: 0, blocks: 1)) { XCTAssertEqual($0 as? HostError, .failed("Read", .invalidNamespace)) }
        XCTAssertThrowsError(try ha.read(nsid: 3, lba: 0, blocks: 1)) { XCTAssertEqual($0 as? HostError, .failed("Read", .invalidNamespace)) }
        XCTAssertEqual(try hb.identify(cns: 0, nsid: 2), [UInt8](repeating: 0, count: 4096), "a hidden NSID reads as inactive")
        XCTAssertThrowsError(try hb.identify(cns: 3, nsid: 2))
        // The shared namespace is reachable by both.
        try hb.write(nsid: 1, lba: 0, data: pattern(512, seed: 2))
        XCTAssertEqual(try ha.read(nsid: 1, lba: 0, blocks: 1), pattern(512, seed: 2))
    }

    /// A queue remembers which masked namespaces its host may see (so the host NQN is not
    /// hashed per command); a re-mask at runtime must take effect on queues that already
    /// used the namespace, both ways.
    func testRemaskingTakesEffectOnConnectedQueues() throws {
        let nqn = "nqn.2026-11.io.fathom.test:remask"
        let a = "nqn.2026-11.io.fathom.test:host-a-000000000000"
        let b = "nqn.2026-11.io.fathom.test:host-b-000000000000"
        func config(_ allowed: String) throws -> TargetConfig {
            try TargetConfig.parse(json: Array("""
            {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "0", "trtype": "tcp"}, "portid": 1, "subsystems": ["\(nqn)"]}],
             "subsystems": [{"nqn": "\(nqn)", "attr": {"allow_any_host": "1"}, "namespaces": [
                {"nsid": 2, "device": {"backend": "memory", "size": "4M"}, "allowed_hosts": ["\(allowed)"]},
                {"nsid": 70, "device": {"backend": "memory", "size": "4M"}, "allowed_hosts": ["\(allowed)"]}]}]}
            """.utf8))
        }
        let server = try startServer(try config(a))
        defer { server.stop() }
        let ha = try connect(server, nqn, as: a), hb = try connect(server, nqn, as: b)
        for nsid: UInt32 in [2, 70] {  // 70: above the cache's bitmap, always checked
            for _ in 0..<3 { XCTAssertEqual(try ha.read(nsid: nsid, lba: 0, blocks: 1).count, 512) }
            XCTAssertThrowsError(try hb.read(nsid: nsid, lba: 0, blocks: 1)) { XCTAssertEqual($0 as? HostError, .failed("Read", .invalidNamespace)) }
        }
        try server.apply(try config(b))
        for nsid: UInt32 in [2, 70] {
            XCTAssertThrowsError(try ha.read(nsid: nsid, lba: 0, blocks: 1), "host A's queue saw NSID \(nsid) before the re-mask") {
                XCTAssertEqual($0 as? HostError, .failed("Read", .invalidNamespace))
            }
            XCTAssertEqual(try hb.read(nsid: nsid, lba: 0, blocks: 1).count, 512)
        }
    }

    func testMaskedHostMustBeAValidNQN() {
        let json = #"""
        {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "4420", "trtype": "tcp"}, "portid": 1}],
         "subsystems": [{"nqn": "nqn.2026-11.io.fathom:m", "namespaces": [{"nsid": 1, "device": {"path": "/x"}, "allowed_hosts": ["me"]}]}]}
        """#
        XCTAssertThrowsError(try TargetConfig.parse(json: Array(json.utf8))) {
            XCTAssertEqual(($0 as? ConfigError)?.key, "subsystems[0].namespaces[0].allowed_hosts[0]")
        }
    }
}
