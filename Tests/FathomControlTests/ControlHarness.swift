import FathomConfig
import FathomControl
import FathomReactor
@_exported import FathomTestSupport
import FoundationEssentials
import Logging
import NVMeInitiator
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A FathomServer on 127.0.0.1 (ephemeral port) with its control socket, as fathomd runs
/// them, and a client that speaks to the socket like fathomctl.
final class ControlHarness {
    static let nqn = "nqn.2026-11.io.fathom.test:ctl"
    static let hostA = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001"
    static let hostB = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-000000000002"
    let directory: String
    let server: FathomServer
    let service: ControlService
    let control: ControlServer
    let configPath: String
    var port: UInt16 { server.boundPorts[0] }

    init() throws {
        var template = Array("/tmp/fathom-ctl-XXXXXX".utf8CString)
        directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        let image = Self.makeImage(directory + "/ns1.img", mib: 8)
        configPath = directory + "/config.json"
        let json = """
        {"hosts": [{"nqn": "\(Self.hostA)"}],
         "ports": [{"addr": {"adrfam": "ipv4", "traddr": "127.0.0.1", "treq": "not specified", "trsvcid": "0", "trtype": "tcp"},
                    "portid": 1, "referrals": [], "subsystems": ["\(Self.nqn)"]}],
         "subsystems": [{"allowed_hosts": ["\(Self.hostA)"], "attr": {"allow_any_host": "0"},
                         "namespaces": [{"device": {"path": "\(image)"}, "enable": 1, "nsid": 1}], "nqn": "\(Self.nqn)"}]}
        """
        FileManager.default.createFile(atPath: configPath, contents: Data(json.utf8))
        let document = try TargetConfig.loadRaw(path: configPath)
        var logger = Logger(label: "fathom-ctl-test") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = ProcessInfo.processInfo.environment["FATHOM_TEST_LOG"] == nil ? .critical : .debug
        server = try FathomServer(config: TargetConfig.validate(document), reactorCount: 2, logger: logger)
        try server.start()
        service = ControlService(server: server, document: document, configPath: configPath)
        control = try ControlServer(path: directory + "/ctl.sock", handler: service.handle)
        try control.start()
    }

    func makeImage(_ name: String, mib: Int) -> String { Self.makeImage(directory + "/" + name, mib: mib) }

    static func makeImage(_ path: String, mib: Int) -> String {
        let fd = open(path, O_CREAT | O_RDWR, 0o644)
        ftruncate(fd, off_t(mib << 20))
        close(fd)
        return path
    }

    func stop() {
        control.stop()
        server.stop()
        _ = try? FileManager.default.removeItem(atPath: directory)
    }

    /// Sends one request through the socket, as fathomctl does.
    @discardableResult
    func send(_ command: String, _ fill: (inout ControlRequest) -> Void = { _ in }) throws -> ControlResponse {
        var r = ControlRequest(command)
        fill(&r)
        return try ControlClient.send(r, socketPath: control.path)
    }

    func connect(host: String, port: UInt16? = nil, subsystem: String = ControlHarness.nqn, queues: Int = 1) throws -> HostController {
        let c = try HostController(host: "127.0.0.1", port: port ?? self.port, subsystemNQN: subsystem, hostNQN: host)
        try c.enable()
        if queues > 0 { try c.createIOQueues(queues) }
        return c
    }

    /// Polls `condition` for up to `seconds` (see FathomTestSupport).
    func eventually(seconds: Double = 5, _ condition: () -> Bool) -> Bool { FathomTestSupport.eventually(seconds: seconds, condition) }
}
