import CLiburing
import FathomConfig
import FathomReactor
import FathomStorage
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

/// A backend that fails some ranges with EIO, like SPDK's error bdev or a device-mapper error
/// target (which this machine's kernel lacks).
final class FaultyBackend: WrappedMemoryBackend {
    let badReads: Range<UInt64>
    let badWrites: Range<UInt64>
    init(bytes: UInt64, badReads: Range<UInt64>, badWrites: Range<UInt64>) throws {
        self.badReads = badReads
        self.badWrites = badWrites
        try super.init(bytes: bytes)
    }
    override func prepare(_ operation: StorageOperation, sqe: () -> UnsafeMutablePointer<io_uring_sqe>) -> Int32? {
        switch operation {
        case let .read(_, length, offset) where badReads.overlaps(offset..<(offset + UInt64(length))):
            return -EIO
        case let .write(_, length, offset, _) where badWrites.overlaps(offset..<(offset + UInt64(length))):
            return -EIO
        default:
            return inner.prepare(operation, sqe: sqe)
        }
    }
}

final class BackendErrorTests: XCTestCase {
    func testEIOGivesMediaErrorsAndOtherNamespacesServe() throws {
        let nqn = "nqn.2026-11.io.fathom.test:eio"
        let server = try startServer(nqn: nqn, nsid1: try FaultyBackend(bytes: 8 << 20, badReads: 100 * 512..<200 * 512,
                                                                         badWrites: 300 * 512..<400 * 512))
        defer { server.stop() }
        let c = try HostController(host: "127.0.0.1", port: server.boundPorts[0], subsystemNQN: nqn)
        try c.enable()
        try c.createIOQueues(1)
        let q = c.ioQueues[0]
        XCTAssertEqual(try q.execute(HostController.readCommand(nsid: 1, lba: 96, blocks: 8), readLength: 4096).status, .unrecoveredReadError)
        XCTAssertEqual(try q.execute(HostController.writeCommand(nsid: 1, lba: 300, blocks: 1), write: pattern(512, seed: 1)).status, .writeFault)
        let log = try c.getLogPage(0x01, length: 128)
        log.withUnsafeBytes {
            XCTAssertEqual($0.baseAddress!.le16(12) >> 1 & 0x7FF, NVMeStatus.writeFault.rawValue & 0x7FF)
            XCTAssertEqual($0.baseAddress!.le64(16), 300, "LBA of the failed write")
            XCTAssertEqual($0.baseAddress!.le16(64 + 12) >> 1 & 0x7FF, NVMeStatus.unrecoveredReadError.rawValue & 0x7FF)
        }
        let smart = try c.getLogPage(0x02, length: 512)
        smart.withUnsafeBytes {
            XCTAssertEqual($0.baseAddress!.le64(176), 2, "error log entries in SMART")
            XCTAssertEqual($0.baseAddress!.le64(160), 2, "media errors in SMART")
        }
        // Good ranges of the faulty namespace, and the other namespace, keep working.
        try c.write(nsid: 1, lba: 0, data: pattern(4096, seed: 2))
        XCTAssertEqual(try c.read(nsid: 1, lba: 0, blocks: 8), pattern(4096, seed: 2))
        try c.write(nsid: 2, lba: 100, data: pattern(4096, seed: 3))
        XCTAssertEqual(try c.read(nsid: 2, lba: 100, blocks: 8), pattern(4096, seed: 3))
    }

    func testBackingFileTruncatedUnderALiveNamespace() throws {
        let h = try TargetHarness()
        defer { h.stop() }
        let c = try h.controller(queues: 1)
        try c.write(lba: 1000, data: pattern(4096, seed: 4))
        XCTAssertEqual(truncate(h.directory + "/ns1.img", 0), 0)
        // The namespace keeps its size until a reload; the lost range reads as zeros (a hole),
        // and writes extend the file again. Nothing crashes.
        XCTAssertEqual(try c.read(lba: 1000, blocks: 8), [UInt8](repeating: 0, count: 4096))
        try c.write(lba: 2000, data: pattern(4096, seed: 5))
        XCTAssertEqual(try c.read(lba: 2000, blocks: 8), pattern(4096, seed: 5))
    }
}
