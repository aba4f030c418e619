import FathomConfig
import FathomReactor
import Logging
import NVMeInitiator
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A backing store that fails: the command gets the matching status and an error log entry,
/// and every other namespace keeps serving.
final class BackendFailureTests: XCTestCase {
    func testFullFilesystemGivesCapacityExceeded() throws {
        var template = Array("/tmp/fathom-enospc-XXXXXX".utf8CString)
        let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        let small = dir + "/small"
        mkdir(small, 0o755)
        // A 2 MiB filesystem holding a 16 MiB sparse image: writes run out of space.
        guard mount("tmpfs", small, "tmpfs", 0, "size=2m") == 0 else {
            return XCTFail("mounting a 2 MiB tmpfs needs root (errno \(errno)); the suite runs as root in CI")
        }
        defer {
            umount(small)
            try? FileManager.default.removeItem(atPath: dir)
        }
        for (path, mib) in [(small + "/full.img", 16), (dir + "/fine.img", 16)] {
            let fd = open(path, O_CREAT | O_RDWR, 0o644)
            ftruncate(fd, off_t(mib << 20))
            Glibc.close(fd)
        }
        let nqn = "nqn.2026-11.io.fathom.test:enospc"
        let config = try TargetConfig.parse(json: Array("""
        {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "0", "trtype": "tcp"}, "portid": 1, "subsystems": ["\(nqn)"]}],
         "subsystems": [{"nqn": "\(nqn)", "attr": {"allow_any_host": "1"}, "namespaces": [
            {"nsid": 1, "device": {"path": "\(small)/full.img"}}, {"nsid": 2, "device": {"path": "\(dir)/fine.img"}}]}]}
        """.utf8))
        var logger = Logger(label: "enospc-test") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .critical
        let server = try FathomServer(config: config, reactorCount: 1, logger: logger)
        try server.start()
        defer { server.stop() }
        let c = try HostController(host: "127.0.0.1", port: server.boundPorts[0], subsystemNQN: nqn)
        try c.enable()
        try c.createIOQueues(1)
        var failure: NVMeStatus? = nil
        for k in 0..<16 {
            let r = try c.ioQueues[0].execute(HostController.writeCommand(nsid: 1, lba: UInt64(k) * 1024, blocks: 1024),
                                              write: pattern(512 * 1024, seed: UInt64(k)))
            if !r.status.isSuccess {
                failure = r.status
                break
            }
        }
        XCTAssertEqual(failure, .capacityExceeded)
        let log = try c.getLogPage(0x01, length: 64)
        log.withUnsafeBytes {
            XCTAssertEqual($0.baseAddress!.le16(12) >> 1 & 0x7FF, NVMeStatus.capacityExceeded.rawValue & 0x7FF)
            XCTAssertEqual($0.baseAddress!.le32(24), 1, "NSID of the failed write")
        }
        // The other namespace, and reads of the full one, carry on.
        let data = pattern(64 * 1024, seed: 99)
        try c.write(nsid: 2, lba: 0, data: data)
        XCTAssertEqual(try c.read(nsid: 2, lba: 0, blocks: 128), data)
        XCTAssertEqual(try c.read(nsid: 1, lba: 0, blocks: 1024), pattern(512 * 1024, seed: 0))
    }
}
