import Foundation
import NVMeInitiator
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The fathomd binary itself: configuration errors before anything listens, --check-config,
/// systemd readiness, SIGHUP reload and SIGTERM.
final class DaemonProcessTests: XCTestCase {
    /// fathomd sits in the build directory, next to (or around) the test bundle.
    var fathomd: URL {
        let bundle = Bundle(for: Self.self).bundleURL
        let candidates = [bundle.appendingPathComponent("fathomd"), bundle.deletingLastPathComponent().appendingPathComponent("fathomd")]
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[0]
    }

    var fathomctl: URL { fathomd.deletingLastPathComponent().appendingPathComponent("fathomctl") }

    func runToEnd(_ args: [String], executable: URL? = nil) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = executable ?? fathomd
        p.arguments = args
        let err = Pipe()
        p.standardError = err
        p.standardOutput = err
        try p.run()
        let text = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, text)
    }

    func testConfigErrorsAndCheckConfig() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("fathomd-test-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let bad = dir.appendingPathComponent("bad.json")
        try #"{"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "4420", "trtype": "tcp"}, "portid": "x"}], "subsystems": []}"#
            .write(to: bad, atomically: true, encoding: .utf8)
        var (status, text) = try runToEnd(["--config", bad.path])
        XCTAssertEqual(status, 1)
        XCTAssertTrue(text.contains("ports[0].portid"), text)
        XCTAssertTrue(text.contains("\"x\""), text)
        (status, text) = try runToEnd(["--check-config", bad.path])
        XCTAssertEqual(status, 1)
        let image = dir.appendingPathComponent("ns.img")
        FileManager.default.createFile(atPath: image.path, contents: Data(count: 1 << 20))
        let good = dir.appendingPathComponent("good.json")
        try """
        {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "0", "trtype": "tcp"}, "portid": 1, "subsystems": ["nqn.2026-11.io.fathom.test:p"]}],
         "subsystems": [{"nqn": "nqn.2026-11.io.fathom.test:p", "namespaces": [{"nsid": 1, "device": {"path": "\(image.path)"}},
                                                                             {"nsid": 2, "device": {"path": "\(dir.path)/missing.img"}}]}]}
        """.write(to: good, atomically: true, encoding: .utf8)
        (status, text) = try runToEnd(["--check-config", good.path])
        XCTAssertEqual(status, 1)
        XCTAssertTrue(text.contains("missing.img"), text)
        XCTAssertFalse(text.contains("ns.img\""), "only the broken namespace is reported")
        try """
        {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "0", "trtype": "tcp"}, "portid": 1, "subsystems": ["nqn.2026-11.io.fathom.test:p"]}],
         "subsystems": [{"nqn": "nqn.2026-11.io.fathom.test:p", "namespaces": [{"nsid": 1, "device": {"path": "\(image.path)"}}]}]}
        """.write(to: good, atomically: true, encoding: .utf8)
        (status, text) = try runToEnd(["--check-config", good.path])
        XCTAssertEqual(status, 0, text)
        XCTAssertTrue(text.contains("OK"), text)
    }

    func testReadinessNotificationAndCleanStop() throws {
        // A datagram socket standing in for systemd's NOTIFY_SOCKET.
        let path = "/tmp/fathomd-notify-\(getpid())"
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        XCTAssertEqual(withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }, 0)
        defer { close(fd); unlink(path) }
        var tv = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))

        let image = "/tmp/fathomd-demo-\(getpid()).img"
        defer { unlink(image) }
        let p = Process()
        p.executableURL = fathomd
        let control = "/tmp/fathomd-ctl-\(getpid()).sock"
        p.arguments = ["--demo", "--demo-image", image, "--demo-size-mib", "16", "--demo-listen", "127.0.0.1:0", "--log-level", "warning",
                       "--control-socket", control]
        var env = ProcessInfo.processInfo.environment
        env["NOTIFY_SOCKET"] = path
        p.environment = env
        try p.run()
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = recv(fd, &buffer, buffer.count, 0)
        XCTAssertGreaterThan(n, 0, "READY=1 within 20 s")
        XCTAssertTrue(String(decoding: buffer.prefix(max(n, 0)), as: UTF8.self).hasPrefix("READY=1"))
        // fathomctl against the running daemon (global options before or after the subcommand).
        var (status, text) = try runToEnd(["--socket", control, "status"], executable: fathomctl)
        XCTAssertEqual(status, 0, text)
        XCTAssertTrue(text.contains("subsystems:  1, namespaces: 1"), text)
        (status, text) = try runToEnd(["subsystem", "list", "--json", "--socket", control], executable: fathomctl)
        XCTAssertEqual(status, 0, text)
        XCTAssertTrue(text.contains("\"nqn\" : \"nqn.2026-11.io.fathom:demo\""), text)
        (status, text) = try runToEnd(["--socket", control, "save"], executable: fathomctl)
        XCTAssertEqual(status, 1)
        XCTAssertTrue(text.contains("give save a --file"), text)
        // A second daemon on the same control socket is refused with a clear message.
        (status, text) = try runToEnd(["--demo", "--demo-image", image, "--demo-listen", "127.0.0.1:0", "--control-socket", control])
        XCTAssertEqual(status, 1)
        XCTAssertTrue(text.contains("another fathomd already serves the control socket"), text)
        kill(p.processIdentifier, SIGHUP)  // the demo has nothing to reload: must not die
        usleep(200_000)
        XCTAssertTrue(p.isRunning)
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0)
        XCTAssertFalse(FileManager.default.fileExists(atPath: control), "the control socket is removed at exit")
        let stopping = recv(fd, &buffer, buffer.count, 0)
        XCTAssertTrue(String(decoding: buffer.prefix(max(stopping, 0)), as: UTF8.self).contains("STOPPING=1"))
    }
}
