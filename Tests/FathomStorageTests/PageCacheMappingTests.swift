import CLiburing
import Foundation
import FathomStorage
import FathomTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Reads of a file on a disk filesystem sent from its mapping where the page cache holds the
/// range (`FileBackend.readInPlace`, `PageCacheResidency`): only cached ranges, the scanner
/// following the cache as it changes, and a file shrunk under the mapping costing a fallback.
final class PageCacheMappingTests: XCTestCase {
    private var directory = ""
    private var paths: [String] = []

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory()
        try XCTSkipUnless(isPageCacheMappedFilesystem(holding: directory),
                          "\(directory) is on \(filesystemType(holding: directory) ?? "unknown"), not a disk filesystem whose page cache is mapped")
        try XCTSkipUnless(FileBackend.kernelReportsCachedPages, "this kernel has no cachestat(2) (Linux 6.5)")
    }

    override func tearDown() {
        paths.forEach { unlink($0) }
        paths = []
    }

    /// A file of `bytes` of test data, written and synced (clean pages can be evicted), cached.
    private func diskFile(bytes: Int, seed: UInt64) throws -> (String, [UInt8]) {
        let path = "\(directory)/fathom-pagecache-\(getpid())-\(paths.count).img"
        paths.append(path)
        let fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { Glibc.close(fd) }
        let data = pattern(bytes, seed: seed)
        XCTAssertEqual(pwrite(fd, data, bytes, 0), bytes)
        XCTAssertEqual(fsync(fd), 0)
        return (path, data)
    }

    /// Drops the clean cached pages of a range of `path` (pages mapped in a page table stay).
    private func evict(_ path: String, offset: Int = 0, length: Int = 0) {
        let fd = open(path, O_RDONLY)
        XCTAssertEqual(posix_fadvise(fd, off_t(offset), off_t(length), POSIX_FADV_DONTNEED), 0)
        Glibc.close(fd)
    }

    /// Reads a range of `path` with `pread`, which brings it into the page cache (and only it:
    /// no readahead, which reaches 8 MiB on some disks).
    private func cache(_ path: String, offset: Int, length: Int) {
        let fd = open(path, O_RDONLY)
        XCTAssertEqual(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM), 0)
        var buffer = [UInt8](repeating: 0, count: length)
        XCTAssertEqual(pread(fd, &buffer, length, off_t(offset)), length)
        Glibc.close(fd)
    }

    /// Polls until the scanner counts `expected` cached chunks, reading `ranges` back into the
    /// cache before each look: this VM evicts pages of files now and then on its own, and a
    /// chunk short of one page is not cached.
    private func seesCached(_ b: FileBackend, _ expected: Int, keeping ranges: [(Int, Int)], path: String) -> Bool {
        eventually {
            for (offset, length) in ranges { cache(path, offset: offset, length: length) }
            return b.cachedChunks?.cached == expected
        }
    }

    private func bytes(_ b: FileBackend, _ offset: Int, _ length: Int) -> [UInt8]? {
        b.readInPlace(offset: UInt64(offset), length: length).map { Array(UnsafeRawBufferPointer(start: $0, count: length)) }
    }

    func testCachedFileIsReadFromItsMapping() throws {
        let size = (8 << 20) + 4096  // a last chunk of one page
        let (path, data) = try diskFile(bytes: size, seed: 5)
        cache(path, offset: 0, length: size)
        let b = try FileBackend(path: path, readOnly: false)
        defer { b.close() }
        XCTAssertTrue(b.readsInPlace)
        XCTAssertEqual(b.cachedChunks?.cached, 9, "scanned when opened")
        XCTAssertEqual(b.cachedChunks?.total, 9)
        for (offset, length) in [(0, 512), (4096 - 512, 1024), ((1 << 20) - 2048, 8192), (3 << 20, 128 << 10), (size - 4096, 4096)] {
            XCTAssertEqual(bytes(b, offset, length), Array(data[offset..<offset + length]), "offset \(offset)")
        }
        XCTAssertNil(b.readInPlace(offset: UInt64(size - 512), length: 1024), "past the end")

        // Writes through the page cache (this backend's go through the ring; here another
        // descriptor's) are what the mapping reads: it is the same page.
        let update = pattern(4096, seed: 9)
        let fd = open(path, O_WRONLY)
        XCTAssertEqual(pwrite(fd, update, 4096, 5 << 20), 4096)
        Glibc.close(fd)
        XCTAssertEqual(bytes(b, 5 << 20, 4096), update)
    }

    /// Ranges that are not cached go through the ring: a read fault there would wait for the
    /// disk on the reactor's thread. The scanner follows the cache: an evicted chunk stops
    /// being read from the mapping, a chunk read back starts again.
    func testOnlyCachedChunksAreReadFromTheMapping() throws {
        let (path, data) = try diskFile(bytes: 4 << 20, seed: 6)
        evict(path)
        let b = try FileBackend(path: path, readOnly: true)
        defer { b.close() }
        XCTAssertEqual(b.cachedChunks?.cached, 0)
        XCTAssertNil(b.readInPlace(offset: 0, length: 4096), "not cached")

        XCTAssertTrue(seesCached(b, 1, keeping: [(2 << 20, 1 << 20)], path: path), "the scanner saw chunk 2 cached")
        XCTAssertEqual(bytes(b, (2 << 20) + 8192, 4096), Array(data[(2 << 20) + 8192..<(2 << 20) + 12288]))
        XCTAssertNil(b.readInPlace(offset: (3 << 20) - 512, length: 1024), "spans chunk 2 and 3, 3 not cached")
        XCTAssertNil(b.readInPlace(offset: 0, length: 4096))

        XCTAssertTrue(seesCached(b, 4, keeping: [(0, 4 << 20)], path: path))
        XCTAssertEqual(bytes(b, (3 << 20) - 512, 1024), Array(data[(3 << 20) - 512..<(3 << 20) + 512]))

        evict(path, offset: 1 << 20, length: 1 << 20)  // chunk 1, never touched through the mapping
        XCTAssertTrue(seesCached(b, 3, keeping: [(0, 1 << 20), (2 << 20, 2 << 20)], path: path), "the scanner saw chunk 1 evicted")
        XCTAssertNil(b.readInPlace(offset: (1 << 20) + 4096, length: 4096))
        XCTAssertNotNil(b.readInPlace(offset: 0, length: 4096))
    }

    /// Holes read as zeros without the disk (the filesystem fills the page in itself), so a
    /// chunk of holes counts as readable from memory; a chunk with data only once it is cached.
    func testHolesAreReadFromTheMapping() throws {
        let path = "\(directory)/fathom-pagecache-\(getpid())-sparse.img"
        paths.append(path)
        let data = pattern(1 << 20, seed: 10)
        let fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0o644)
        XCTAssertEqual(ftruncate(fd, 4 << 20), 0)
        XCTAssertEqual(pwrite(fd, data, data.count, 1 << 20), data.count)  // chunk 1 only
        XCTAssertEqual(fsync(fd), 0)
        Glibc.close(fd)
        evict(path)
        let b = try FileBackend(path: path, readOnly: true)
        defer { b.close() }
        XCTAssertEqual(b.cachedChunks?.cached, 3, "chunks 0, 2 and 3 are holes")
        XCTAssertEqual(bytes(b, 3 << 20, 8192), [UInt8](repeating: 0, count: 8192))
        XCTAssertNil(b.readInPlace(offset: (1 << 20) + 4096, length: 4096), "data, not cached")
        XCTAssertTrue(seesCached(b, 4, keeping: [(1 << 20, 1 << 20)], path: path))
        XCTAssertEqual(bytes(b, (1 << 20) + 4096, 4096), Array(data[4096..<8192]))
    }

    func testNotMappedWhereItShouldNotBe() throws {
        let (path, _) = try diskFile(bytes: 2 << 20, seed: 7)
        cache(path, offset: 0, length: 2 << 20)
        let off = try FileBackend(path: path, readOnly: true, mapsPageCache: false)
        let direct = try FileBackend(path: path, readOnly: true, directIO: true)
        let on = try FileBackend(path: path, readOnly: true)
        defer { off.close(); direct.close(); on.close() }
        XCTAssertFalse(off.readsInPlace)
        XCTAssertNil(off.cachedChunks)
        XCTAssertNil(off.readInPlace(offset: 0, length: 4096))
        XCTAssertFalse(direct.readsInPlace, "O_DIRECT reads the disk, not the cache")
        XCTAssertNil(direct.readInPlace(offset: 0, length: 4096))
        XCTAssertTrue(on.readsInPlace)
        XCTAssertFalse(on.writesInPlace, "writes to a disk filesystem go through the ring")
    }

    /// Someone shrinks the file under the mapping before the scanner notices: touching a page
    /// past the new end raises SIGBUS, which the mapping guard absorbs. The read in place is
    /// refused and so is every later one; the process goes on.
    func testFileShrunkUnderTheMappingFallsBackToTheRing() throws {
        let (path, data) = try diskFile(bytes: 4 << 20, seed: 8)
        cache(path, offset: 0, length: 4 << 20)
        let b = try FileBackend(path: path, readOnly: true)
        defer { b.close() }
        XCTAssertEqual(bytes(b, 3 << 20, 4096), Array(data[(3 << 20)..<(3 << 20) + 4096]))

        XCTAssertEqual(truncate(path, 1 << 20), 0)
        XCTAssertNil(b.readInPlace(offset: (3 << 20) + 8192, length: 4096), "past the new end")
        XCTAssertFalse(b.readsInPlace)
        XCTAssertNil(b.readInPlace(offset: 0, length: 4096), "no more reads from this mapping")
        XCTAssertTrue(seesCached(b, 1, keeping: [(0, 1 << 20)], path: path), "the scanner saw the file shrink")
    }
}
