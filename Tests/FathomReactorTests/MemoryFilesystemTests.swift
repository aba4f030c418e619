@testable import FathomReactor
import FathomStorage
import NVMeInitiator
import NVMeWire
import Synchronization
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

    override func tearDown() {
        harness?.stop()
        harness = nil  // XCTest keeps test case instances; their servers should not outlive the test
    }

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

    private var fileBackend: FileBackend? {
        (harness.target.subsystem(TargetHarness.nqn)?.namespace(1)?.backend as? StorageNamespace)?.store as? FileBackend
    }

    /// An image with no holes is read from its mapping: hosts read what is in the file —
    /// written by them or by anyone else — with and without digests, in sizes from one block
    /// to 512 KiB; a Write Zeroes (which punches a hole) moves reads back to pread.
    func testDenseImageIsReadFromItsMapping() throws {
        harness.stop()
        harness = try TargetHarness(sizeMiB: 16, root: "/dev/shm", denseImage: true)
        XCTAssertEqual(fileBackend?.readsInPlace, true)
        let outside = pattern(1 << 20, seed: 41)
        let fd = open(image, O_RDWR)
        defer { Glibc.close(fd) }
        XCTAssertEqual(pwrite(fd, outside, outside.count, 8 << 20), outside.count)

        for digest in [false, true] {
            let c = try harness.controller(queues: 2, headerDigest: digest, dataDigest: digest)
            defer { try? c.shutdown() }
            for (n, blocks) in [1, 7, 8, 128, 256, 1024].enumerated() {
                let lba = UInt64(16384 + n * 97)
                XCTAssertEqual(try c.read(queue: n % 2, lba: lba, blocks: blocks),
                               Array(outside[(Int(lba) - 16384) * 512..<(Int(lba) - 16384 + blocks) * 512]), "lba \(lba) digest \(digest)")
            }
            let mine = pattern(64 * 1024, seed: digest ? 2 : 1)
            try c.write(lba: 100, data: mine)
            XCTAssertEqual(try c.read(queue: 1, lba: 100, blocks: 128), mine)
            var onFile = [UInt8](repeating: 0, count: mine.count)
            XCTAssertEqual(pread(fd, &onFile, mine.count, 100 * 512), mine.count)
            XCTAssertEqual(onFile, mine)
        }
        XCTAssertEqual(fileBackend?.readsInPlace, true, "still reading in place")

        let c = try harness.controller(queues: 1)
        defer { try? c.shutdown() }
        let zeroes = SubmissionQueueEntry(opcode: 0x08, commandID: 0, nsid: 1, cdw10: 200, cdw11: 0, cdw12: 7)
        XCTAssertEqual(try c.ioQueues[0].execute(zeroes).status, .success)
        XCTAssertEqual(fileBackend?.readsInPlace, false)
        XCTAssertEqual(try c.read(lba: 200, blocks: 8), [UInt8](repeating: 0, count: 4096))
        XCTAssertEqual(try c.read(lba: 16384, blocks: 8), Array(outside[0..<4096]))
    }

    /// The same image shrunk under hosts reading it in place, with and without a data digest
    /// (whose CRC touches the pages in user space): the mapping guard absorbs the SIGBUS, reads
    /// fall back to pread (zeros past the new end, as for any file), connections and daemon go on.
    func testDenseImageTruncatedUnderReadingHostsIsNoCrash() throws {
        harness.stop()
        harness = try TargetHarness(sizeMiB: 16, root: "/dev/shm", denseImage: true)
        let data = pattern(8192, seed: 12)
        let plain = try harness.controller(queues: 1)
        let digested = try harness.controller(queues: 1, headerDigest: true, dataDigest: true)
        defer { try? plain.shutdown(); try? digested.shutdown() }
        try plain.write(lba: 30000, data: data)
        try plain.write(lba: 8, data: data)
        for c in [plain, digested] { XCTAssertEqual(try c.read(lba: 30000, blocks: 16), data) }
        XCTAssertEqual(fileBackend?.readsInPlace, true)

        XCTAssertEqual(truncate(image, 1 << 20), 0)
        for c in [digested, plain] {
            XCTAssertEqual(try c.read(lba: 30000, blocks: 16), [UInt8](repeating: 0, count: 8192), "past the new end")
            XCTAssertEqual(try c.read(lba: 8, blocks: 16), data, "before it")
        }
        XCTAssertEqual(fileBackend?.readsInPlace, false)
        try digested.write(lba: 30000, data: data)
        XCTAssertEqual(try plain.read(lba: 30000, blocks: 16), data)
    }

    /// Hosts on both reactors (one with digests) write and read a mapped tmpfs image while it is
    /// truncated to 1 MiB and extended again, over and over: faults land at random points of
    /// the copies into and out of the mapping. The daemon survives, reads return either what
    /// was written or zeros of the truncation (nothing else), and once the file stays whole every
    /// host's writes read back.
    func testMappedImageTruncatedAndExtendedUnderLoad() throws {
        harness.stop()
        harness = try TargetHarness(sizeMiB: 16, root: "/dev/shm", denseImage: true)
        XCTAssertEqual(fileBackend?.readsInPlace, true)
        let hosts = try (0..<3).map { k in try harness.controller(queues: 2, headerDigest: k == 2, dataDigest: k == 2) }
        let lock = NSLock()
        var unexpected: [String] = [], dropped = 0, verified = 0, zeroed = 0
        let churning = Atomic<Bool>(true)
        let group = DispatchGroup()
        for (k, c) in hosts.enumerated() {
            DispatchQueue.global().async(group: group) {
                var round = 0
                while churning.load(ordering: .relaxed) && round < 2000 {
                    round += 1
                    let blocks = [8, 16, 64, 128][round % 4]
                    let lba = UInt64(k * 4096 + (round * 72) % 3968)  // each host its own 2 MiB
                    let data = pattern(blocks * 512, seed: UInt64(k * 1000 + round))
                    do {
                        try c.write(queue: round % 2, lba: lba, data: data)
                        let back = try c.read(queue: (round + 1) % 2, lba: lba, blocks: blocks)
                        lock.lock()
                        if back == data { verified += 1 }
                        else if Self.isDataOrZeros(back, data) { zeroed += 1 }
                        else { unexpected.append("host \(k) lba \(lba): neither the data nor zeros") }
                        lock.unlock()
                    } catch {
                        // A truncation between a read's page check and the kernel's copy ends
                        // that connection (EFAULT on its send): allowed, not expected often.
                        lock.lock(); dropped += 1; lock.unlock()
                        return
                    }
                }
            }
        }
        for _ in 0..<100 {
            XCTAssertEqual(truncate(image, 1 << 20), 0)
            usleep(4000)
            XCTAssertEqual(truncate(image, 16 << 20), 0)
            usleep(4000)
        }
        churning.store(false, ordering: .relaxed)
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success)
        XCTAssertEqual(unexpected, [])
        print("mapped image under truncation: \(verified) verified, \(zeroed) zeroed by a truncation, \(dropped) connections dropped")
        XCTAssertLessThan(dropped, hosts.count, "some host kept its connection")

        // The file stays whole now: what any host (old or new) writes reads back.
        let fresh = try harness.controller(queues: 1)
        defer { try? fresh.shutdown() }
        for c in hosts + [fresh] {
            guard let again = try? c.read(lba: 0, blocks: 1), again.count == 512 else { continue }  // a dropped one
            let data = pattern(65536, seed: 4242)
            try c.write(lba: 20000, data: data)
            XCTAssertEqual(try fresh.read(lba: 20000, blocks: 128), data)
        }
        for c in hosts { try? c.shutdown() }
    }

    /// Every 512-byte block of `got` is either that block of `data` or zeros.
    private static func isDataOrZeros(_ got: [UInt8], _ data: [UInt8]) -> Bool {
        guard got.count == data.count else { return false }
        return stride(from: 0, to: got.count, by: 512).allSatisfy { i in
            let block = got[i..<i + 512]
            return block.elementsEqual(data[i..<i + 512]) || block.allSatisfy { $0 == 0 }
        }
    }
}
