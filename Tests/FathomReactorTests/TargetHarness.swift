import FathomConfig
import FathomReactor
import FathomTarget
@_exported import FathomTestSupport
import Logging
import NVMeInitiator
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A real daemon (the same FathomServer fathomd runs) on 127.0.0.1 with an ephemeral port,
/// backed by sparse (or `denseImage`) files in a temporary directory (under `root`).
final class TargetHarness {
    static let nqn = "nqn.2026-11.io.fathom.test:data"
    static let restrictedNQN = "nqn.2026-11.io.fathom.test:restricted"
    static let allowedHost = "nqn.2026-11.io.fathom.test:host-allowed"
    let directory: String
    let server: FathomServer
    var port: UInt16 { server.boundPorts[0] }
    var target: Target { server.target }
    let blocks: UInt64

    /// `denseImage`: the image's blocks are allocated (zeros) instead of a sparse file.
    init(sizeMiB: UInt64 = 64, settings: TargetSettings = TargetSettings(), reactors: Int = 2, root: String = "/tmp",
         denseImage: Bool = false) throws {
        var template = Array("\(root)/fathom-test-XXXXXX".utf8CString)
        directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        let image = directory + "/ns1.img"
        let fd = open(image, O_CREAT | O_RDWR, 0o644)
        ftruncate(fd, off_t(sizeMiB * 1024 * 1024))
        if denseImage { posix_fallocate(fd, 0, off_t(sizeMiB * 1024 * 1024)) }
        Glibc.close(fd)
        blocks = sizeMiB * 1024 * 1024 / 512
        let json = """
        {"hosts": [{"nqn": "\(Self.allowedHost)"}],
         "ports": [{"addr": {"adrfam": "ipv4", "traddr": "127.0.0.1", "treq": "not specified", "trsvcid": "0", "trtype": "tcp"},
                    "portid": 7, "referrals": [], "subsystems": ["\(Self.nqn)", "\(Self.restrictedNQN)"]}],
         "subsystems": [
           {"allowed_hosts": [], "attr": {"allow_any_host": "1", "serial": "fathomtest0001", "model": "Fathom Test"},
            "namespaces": [{"device": {"nguid": "00112233-4455-6677-8899-aabbccddeeff", "path": "\(image)",
                                       "uuid": "6f1d1b2a-93c4-4b1e-8a55-0c3f6a1e2d44"}, "enable": 1, "nsid": 1}],
            "nqn": "\(Self.nqn)"},
           {"allowed_hosts": ["\(Self.allowedHost)"], "attr": {"allow_any_host": "0"},
            "namespaces": [{"device": {"path": "\(image)"}, "enable": 1, "nsid": 1, "readonly": true}],
            "nqn": "\(Self.restrictedNQN)"}]}
        """
        let config = try TargetConfig.parse(json: Array(json.utf8))
        var logger = Logger(label: "fathom-test") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = ProcessInfo.processInfo.environment["FATHOM_TEST_LOG"] == nil ? .critical : .debug
        server = try FathomServer(config: config, settings: settings, reactorCount: reactors, logger: logger)
        try server.start()
    }

    private var stopped = false

    /// Stops the server (once) and removes the backing files.
    func stop() {
        guard !stopped else { return }
        stopped = true
        server.stop()
        _ = try? FileManager.default.removeItem(atPath: directory)
    }

    /// A connected, enabled controller with `queues` I/O queues.
    func controller(queues: Int = 2, headerDigest: Bool = false, dataDigest: Bool = false, keepAliveMs: UInt32 = 5000,
                    hostNQN: String = HostController.defaultHostNQN, subsystem: String = TargetHarness.nqn) throws -> HostController {
        let c = try HostController(host: "127.0.0.1", port: port, subsystemNQN: subsystem, hostNQN: hostNQN, keepAliveMs: keepAliveMs,
                                   headerDigest: headerDigest, dataDigest: dataDigest)
        try c.enable()
        if queues > 0 { try c.createIOQueues(queues) }
        return c
    }

    /// Polls `condition` for up to `seconds` (see FathomTestSupport).
    func eventually(seconds: Double = 5, _ condition: () -> Bool) -> Bool { FathomTestSupport.eventually(seconds: seconds, condition) }
}
