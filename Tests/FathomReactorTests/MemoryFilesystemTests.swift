@testable import FathomReactor
import FathomStorage
import NVMeInitiator
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A namespace whose file is on tmpfs (`/dev/shm`): its reads, writes and flushes complete on
/// the reactor's thread (`FileBackend.completesInline`) instead of in io_uring's worker threads;
/// everything a host does must behave as on any other file, and what it writes must be in the
/// file.
final class MemoryFilesystemTests: XCTestCase {
    var harness: TargetHarness!

    override func setUpWithError() throws {
        try XCTSkipUnless(filesystemType(holding: "/dev/shm") == "tmpfs", "/dev/shm is not a tmpfs here")
        harness = try TargetHarness(root: "/dev/shm")
    }

    override func tearDown() { harness?.stop() }

    private var image: String { harness.directory + "/ns1.img" }

    func testTmpfsNamespaceCompletesInlineAndKeepsWhatHostsWrite() throws {
        let ns = harness.target.subsystem(TargetHarness.nqn)?.namespace(1)
        let file = (ns?.backend as? StorageNamespace)?.store as? FileBackend
        XCTAssertEqual(file?.completesInline, true)

        let c = try harness.controller(queues: 2)
        var written: [(UInt64, [UInt8])] = []
        for round in 0..<24 {
            let blocks = [1, 8, 64, 1024][round % 4]  // 1024 blocks: 512 KiB through R2T
            let lba = UInt64(round) * 2048 + UInt64(round % 7)
            let data = pattern(blocks * 512, seed: UInt64(500 + round))
            try c.write(queue: round % 2, lba: lba, data: data, fua: round % 3 == 0)
            written.append((lba, data))
        }
        try c.flush()
        let fd = open(image, O_RDONLY)
        defer { Glibc.close(fd) }
        for (n, (lba, data)) in written.enumerated().shuffled() {
            XCTAssertEqual(try c.read(queue: n % 2, lba: lba, blocks: data.count / 512), data, "lba \(lba)")
            var onFile = [UInt8](repeating: 0, count: data.count)
            XCTAssertEqual(pread(fd, &onFile, data.count, off_t(lba * 512)), data.count)
            XCTAssertEqual(onFile, data, "the file itself at lba \(lba)")
        }

        // Write Zeroes and Deallocate (on the ring: fallocate) read back as zeros.
        let q = c.ioQueues[0]
        let zeroes = SubmissionQueueEntry(opcode: 0x08, commandID: 0, nsid: 1, cdw10: 2048, cdw11: 0, cdw12: 15)
        XCTAssertEqual(try q.execute(zeroes).status, .success)
        XCTAssertEqual(try c.read(lba: 2048, blocks: 16), [UInt8](repeating: 0, count: 16 * 512))
        var range = [UInt8](repeating: 0, count: 16)
        range.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(8).littleEndian, toByteOffset: 4, as: UInt32.self)
                                       $0.storeBytes(of: UInt64(4096).littleEndian, toByteOffset: 8, as: UInt64.self) }
        let dsm = SubmissionQueueEntry(opcode: 0x09, commandID: 0, nsid: 1, cdw10: 0, cdw11: 1 << 2)
        XCTAssertEqual(try q.execute(dsm, write: range).status, .success)
        XCTAssertEqual(try c.read(lba: 4096, blocks: 8), [UInt8](repeating: 0, count: 8 * 512))
    }

    /// Someone truncates the file under a connected host: reads past its end come back as
    /// zeros (pread returns short; a mapping would have raised SIGBUS), writes extend it again,
    /// and the daemon goes on.
    func testFileTruncatedUnderTheNamespaceIsNoCrash() throws {
        let c = try harness.controller(queues: 1)
        let data = pattern(8192, seed: 9)
        try c.write(lba: 20000, data: data)
        XCTAssertEqual(truncate(image, 4096), 0)
        XCTAssertEqual(try c.read(lba: 20000, blocks: 16), [UInt8](repeating: 0, count: 8192))
        try c.write(lba: 20000, data: data)
        XCTAssertEqual(try c.read(lba: 20000, blocks: 16), data)
    }
}
