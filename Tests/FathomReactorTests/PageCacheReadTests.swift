import CLiburing
@testable import FathomReactor
import FathomStorage
import Dispatch
import Foundation
import NVMeInitiator
import NVMeWire
import Synchronization
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A namespace file on a disk filesystem whose cached ranges are read from its mapping
/// (`FileBackend.readInPlace`, `PageCacheResidency`): hosts read what is in the file, cached
/// or not, written by them or by anyone else, with and without digests; a file shrunk under
/// reading hosts ends no connection and not the daemon.
final class PageCacheReadTests: XCTestCase {
    var harness: TargetHarness!

    override func setUpWithError() throws {
        try XCTSkipUnless(isPageCacheMappedFilesystem(holding: "/tmp"),
                          "/tmp is on \(filesystemType(holding: "/tmp") ?? "unknown"), not a disk filesystem")
        try XCTSkipUnless(FileBackend.kernelReportsCachedPages, "this kernel has no cachestat(2) (Linux 6.5)")
        harness = try TargetHarness(sizeMiB: 16)
    }

    override func tearDown() {
        harness?.stop()
        harness = nil
    }

    private var image: String { harness.directory + "/ns1.img" }

    private var fileBackend: FileBackend? {
        (harness.target.subsystem(TargetHarness.nqn)?.namespace(1)?.backend as? StorageNamespace)?.store as? FileBackend
    }

    /// Polls until the scanner counts the whole image cached, reading it back into the cache
    /// before each look (this VM evicts pages of files now and then on its own).
    private func seesImageCached() -> Bool {
        eventually {
            let fd = open(self.image, O_RDONLY)
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            for offset in stride(from: 0, to: 16 << 20, by: 1 << 20) { _ = pread(fd, &buffer, buffer.count, off_t(offset)) }
            Glibc.close(fd)
            return self.fileBackend?.cachedChunks?.cached == 16
        }
    }

    /// Writes `data` into the image from outside the daemon (into the page cache).
    private func writeImage(_ data: [UInt8], at offset: Int) {
        let fd = open(image, O_WRONLY)
        XCTAssertEqual(pwrite(fd, data, data.count, off_t(offset)), data.count)
        Glibc.close(fd)
    }

    func testCachedImageIsReadFromItsMapping() throws {
        let outside = pattern(16 << 20, seed: 21)
        writeImage(outside, at: 0)
        XCTAssertTrue(seesImageCached(), "the scanner saw the image cached")
        XCTAssertEqual(harness.server.dataPath(subsystem: TargetHarness.nqn, nsid: 1),
                       "buffered, cached reads from the mapping (16 of 16 MiB cached or holes, 0 reads)")

        for digest in [false, true] {
            let c = try harness.controller(queues: 2, headerDigest: digest, dataDigest: digest)
            defer { try? c.shutdown() }
            for (n, blocks) in [1, 7, 8, 128, 256, 1024].enumerated() {
                let lba = 2048 + n * 2053  // across 1 MiB chunk boundaries too
                XCTAssertTrue(seesImageCached())
                let before = fileBackend?.readsFromMapping ?? 0
                XCTAssertEqual(try c.read(queue: n % 2, lba: UInt64(lba), blocks: blocks),
                               Array(outside[lba * 512..<(lba + blocks) * 512]), "lba \(lba) digest \(digest)")
                XCTAssertGreaterThan(fileBackend?.readsFromMapping ?? 0, before, "lba \(lba): sent from the mapping")
            }
            // A host's write goes through the ring into the same cached pages the mapping reads.
            let mine = pattern(64 * 1024, seed: digest ? 23 : 22)
            try c.write(lba: 100, data: mine)
            XCTAssertTrue(seesImageCached())
            let before = fileBackend?.readsFromMapping ?? 0
            XCTAssertEqual(try c.read(queue: 1, lba: 100, blocks: 128), mine)
            XCTAssertGreaterThan(fileBackend?.readsFromMapping ?? 0, before)
        }

        // Evicted ranges go through the ring again, and read the same bytes from the disk.
        let fd = open(image, O_RDONLY)
        XCTAssertEqual(fdatasync(fd), 0)
        XCTAssertEqual(posix_fadvise(fd, off_t(12 << 20), off_t(4 << 20), POSIX_FADV_DONTNEED), 0)
        Glibc.close(fd)
        XCTAssertTrue(eventually { (self.fileBackend?.cachedChunks?.cached ?? 16) < 16 }, "the scanner saw chunks evicted")
        let c = try harness.controller(queues: 1)
        defer { try? c.shutdown() }
        let lba = (13 << 20) / 512
        XCTAssertNil(fileBackend?.readInPlace(offset: UInt64(lba * 512), length: 64 * 512), "evicted")
        let before = fileBackend?.readsFromMapping
        XCTAssertEqual(try c.read(lba: UInt64(lba), blocks: 64), Array(outside[lba * 512..<(lba + 64) * 512]))
        XCTAssertEqual(fileBackend?.readsFromMapping, before, "read through the ring")
    }

    /// The page cache taken away under hosts reading from the mapping, as memory pressure or
    /// another process would: O_DIRECT writes of the same bytes through another descriptor (the
    /// kernel drops the cached pages of their range, mapped ones included) and
    /// POSIX_FADV_DONTNEED over the whole file, for 3 s, while the scanner's view of what is
    /// cached goes stale between its passes. A Read that then faults on an evicted page waits
    /// for the disk on the reactor, and must still be the file's bytes; no connection ends.
    func testPageCacheEvictedUnderReadingHosts() throws {
        let outside = pattern(16 << 20, seed: 41)
        writeImage(outside, at: 0)
        let sync = open(image, O_RDONLY)
        XCTAssertEqual(fsync(sync), 0)
        Glibc.close(sync)
        XCTAssertTrue(seesImageCached())
        let hosts = try (0..<3).map { k in try harness.controller(queues: 2, headerDigest: k == 2, dataDigest: k == 2) }
        defer { for c in hosts { try? c.shutdown() } }
        let mappedBefore = fileBackend?.readsFromMapping ?? 0
        let results = Mutex<(reads: Int, wrong: [String], failed: [String])>((0, [], []))
        let evicting = Atomic<Bool>(true)
        let group = DispatchGroup()
        for (k, c) in hosts.enumerated() {
            DispatchQueue.global().async(group: group) {
                var round = 0
                while evicting.load(ordering: .relaxed) {
                    round += 1
                    let blocks = [1, 8, 64, 256][round % 4]
                    let lba = (k * 7919 + round * 4099) % (32768 - blocks)
                    do {
                        let got = try c.read(queue: round % 2, lba: UInt64(lba), blocks: blocks)
                        let right = got == Array(outside[lba * 512..<(lba + blocks) * 512])
                        results.withLock {
                            $0.reads += 1
                            if !right { $0.wrong.append("host \(k) lba \(lba) blocks \(blocks)") }
                        }
                    } catch {
                        results.withLock { $0.failed.append("host \(k): \(error)") }
                        return
                    }
                }
            }
        }
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let faultsBefore = usage.ru_majflt
        let direct = open(image, O_WRONLY | fathom_O_DIRECT)
        XCTAssertGreaterThanOrEqual(direct, 0)
        let piece = UnsafeMutableRawPointer.allocate(byteCount: 65536, alignment: 4096)
        defer { piece.deallocate(); Glibc.close(direct) }
        let deadline = Date().addingTimeInterval(3)
        var round = 0
        while Date() < deadline {
            round += 1
            let offset = (round * 37 % 256) * 65536
            outside[offset..<offset + 65536].withUnsafeBytes { piece.copyMemory(from: $0.baseAddress!, byteCount: 65536) }
            XCTAssertEqual(pwrite(direct, piece, 65536, off_t(offset)), 65536)
            if round % 8 == 0 { XCTAssertEqual(posix_fadvise(direct, 0, 0, POSIX_FADV_DONTNEED), 0) }
            usleep(2000)
        }
        evicting.store(false, ordering: .relaxed)
        XCTAssertEqual(group.wait(timeout: .now() + 60), .success)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let (reads, wrong, failed) = results.withLock { $0 }
        XCTAssertEqual(wrong, [])
        XCTAssertEqual(failed, [])
        XCTAssertGreaterThan(fileBackend?.readsFromMapping ?? 0, mappedBefore, "some reads were sent from the mapping")
        print("page cache evicted under reads: \(reads) reads verified, \(round) evictions, "
              + "\((fileBackend?.readsFromMapping ?? 0) - mappedBefore) from the mapping, \(usage.ru_majflt - faultsBefore) major faults")
    }

    /// The image shrunk under hosts reading it from the mapping, with and without a data digest
    /// (whose CRC reads the pages in user space): the mapping guard absorbs the SIGBUS, reads fall
    /// back to the ring (zeros past the new end, as for any file), connections and daemon go on.
    func testImageTruncatedUnderReadingHostsIsNoCrash() throws {
        let outside = pattern(16 << 20, seed: 31)
        writeImage(outside, at: 0)
        XCTAssertTrue(seesImageCached())
        let plain = try harness.controller(queues: 1)
        let digested = try harness.controller(queues: 1, headerDigest: true, dataDigest: true)
        defer { try? plain.shutdown(); try? digested.shutdown() }
        let far = (12 << 20) / 512
        for c in [plain, digested] {
            XCTAssertEqual(try c.read(lba: UInt64(far), blocks: 16), Array(outside[far * 512..<(far + 16) * 512]))
        }

        XCTAssertEqual(truncate(image, 1 << 20), 0)
        for c in [digested, plain] {
            XCTAssertEqual(try c.read(lba: UInt64(far + 16), blocks: 16), [UInt8](repeating: 0, count: 8192))
            XCTAssertEqual(try c.read(lba: 8, blocks: 16), Array(outside[4096..<12288]))
        }
        // The first read past the end faulted, unless the scanner (once a second) saw the
        // file shrink between the truncation and that read.
        if fileBackend?.readsInPlace == true {
            XCTAssertLessThanOrEqual(fileBackend?.cachedChunks?.cached ?? 16, 1, "the scanner came first")
        } else {
            XCTAssertEqual(harness.server.dataPath(subsystem: TargetHarness.nqn, nsid: 1), "buffered")
        }
    }
}
