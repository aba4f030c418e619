import CLiburing
import FathomStorage
import FathomTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Reads of a tmpfs file served from its mapping (`FileBackend.readInPlace`): what is mapped,
/// what is not, and that a file shrunk under the mapping costs a fallback, not the process.
final class FileMappingTests: XCTestCase {
    private var paths: [String] = []

    override func setUpWithError() throws {
        try XCTSkipUnless(filesystemType(holding: "/dev/shm") == "tmpfs", "/dev/shm is not a tmpfs here")
    }

    override func tearDown() {
        paths.forEach { unlink($0) }
        paths = []
    }

    /// A file on /dev/shm holding `bytes` (every page written, so it has no holes) or sparse.
    private func shmFile(bytes: Int, dense: Bool, seed: UInt64 = 1) throws -> (String, [UInt8]) {
        let path = "/dev/shm/fathom-mapping-\(getpid())-\(paths.count).img"
        paths.append(path)
        let fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        defer { Glibc.close(fd) }
        let data = dense ? pattern(bytes, seed: seed) : [UInt8](repeating: 0, count: bytes)
        if dense { XCTAssertEqual(pwrite(fd, data, bytes, 0), bytes) } else { XCTAssertEqual(ftruncate(fd, off_t(bytes)), 0) }
        return (path, data)
    }

    private let noSQE: () -> UnsafeMutablePointer<io_uring_sqe> = { fatalError("an operation on tmpfs took an SQE") }

    func testDenseFileIsReadInPlaceAndSeesWrites() throws {
        let (path, data) = try shmFile(bytes: 1 << 20, dense: true)
        let b = try FileBackend(path: path, readOnly: false)
        defer { b.close() }
        XCTAssertTrue(b.readsInPlace)
        for (offset, length) in [(0, 512), (4096 - 512, 1024), (12345 * 8, 65536), ((1 << 20) - 4096, 4096), (0, 1 << 20)] {
            let p = try XCTUnwrap(b.readInPlace(offset: UInt64(offset), length: length), "offset \(offset)")
            XCTAssertEqual(Array(UnsafeRawBufferPointer(start: p, count: length)), Array(data[offset..<offset + length]))
        }
        XCTAssertNil(b.readInPlace(offset: (1 << 20) - 512, length: 1024), "past the end")
        XCTAssertNil(b.readInPlace(offset: 1 << 21, length: 512), "past the end")

        // Writes go through pwrite into the same pages: an in-place read sees them at once, as
        // do writes by anyone else to the file.
        let update = pattern(8192, seed: 77)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 8192, alignment: 4096)
        defer { buffer.deallocate() }
        buffer.copyMemory(from: update, byteCount: 8192)
        XCTAssertEqual(b.prepare(.write(buffer: buffer, length: 8192, offset: 40960, forceUnitAccess: false), sqe: noSQE), 8192)
        let p = try XCTUnwrap(b.readInPlace(offset: 40960, length: 8192))
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: p, count: 8192)), update)
        let other = open(path, O_WRONLY)
        XCTAssertEqual(pwrite(other, [UInt8](repeating: 0xA5, count: 512), 512, 4096), 512)
        Glibc.close(other)
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: b.readInPlace(offset: 4096, length: 512), count: 512)),
                       [UInt8](repeating: 0xA5, count: 512))
    }

    /// Writes go into the mapping (a sparse file's too: a write fills a hole as pwrite would)
    /// and are in the file at once, for any reader.
    func testWritesGoThroughTheMappingIntoTheFile() throws {
        for dense in [true, false] {
            let (path, _) = try shmFile(bytes: 1 << 20, dense: dense, seed: 5)
            let b = try FileBackend(path: path, readOnly: false)
            defer { b.close() }
            XCTAssertTrue(b.writesInPlace, "dense \(dense)")
            XCTAssertEqual(b.readsInPlace, dense)
            let update = pattern(12288, seed: dense ? 6 : 7)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: 12288, alignment: 4096)
            defer { buffer.deallocate() }
            buffer.copyMemory(from: update, byteCount: 12288)
            XCTAssertEqual(b.prepare(.write(buffer: buffer, length: 12288, offset: 5120, forceUnitAccess: true), sqe: noSQE), 12288)
            let fd = open(path, O_RDONLY)
            var back = [UInt8](repeating: 0, count: 12288)
            XCTAssertEqual(pread(fd, &back, 12288, 5120), 12288)
            Glibc.close(fd)
            XCTAssertEqual(back, update, "dense \(dense)")
            var st = stat()
            XCTAssertEqual(stat(path, &st), 0)
            XCTAssertEqual(st.st_size, 1 << 20, "the size stays")
        }
        let (path, _) = try shmFile(bytes: 1 << 20, dense: true)
        let ro = try FileBackend(path: path, readOnly: true)
        defer { ro.close() }
        XCTAssertFalse(ro.writesInPlace)
    }

    /// A file with no holes has its pages entered in the page tables by a thread of its own
    /// (resident in the mapping before any read); a sparse one is not populated, which would
    /// allocate its holes.
    func testDenseFilesArePopulatedSparseOnesAllocateNothing() throws {
        let (dense, _) = try shmFile(bytes: 8 << 20, dense: true)
        let (sparse, _) = try shmFile(bytes: 8 << 20, dense: false)
        let d = try FileBackend(path: dense, readOnly: false)
        let s = try FileBackend(path: sparse, readOnly: false)
        defer { d.close(); s.close() }
        XCTAssertTrue(eventually(seconds: 10) { Self.residentKiB(mappingOf: dense) == 8 << 10 },
                      "resident: \(Self.residentKiB(mappingOf: dense).map(String.init) ?? "no mapping") KiB")
        XCTAssertEqual(Self.residentKiB(mappingOf: sparse), 0)
        var st = stat()
        XCTAssertEqual(stat(sparse, &st), 0)
        XCTAssertEqual(st.st_blocks, 0, "nothing allocated")
    }

    /// The Rss of this process's mapping of `path` (/proc/self/smaps), nil when not mapped.
    private static func residentKiB(mappingOf path: String) -> Int? {
        // Read in pieces: procfs files report a size of 0, which whole-file readers trust.
        let fd = open("/proc/self/smaps", O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while case let n = read(fd, &chunk, chunk.count), n > 0 { bytes += chunk[0..<n] }
        let smaps = String(decoding: bytes, as: UTF8.self)
        var inMapping = false
        for line in smaps.split(separator: "\n") {
            let range = line.prefix { $0 != " " }
            if range.contains("-"), range.allSatisfy({ $0.isHexDigit || $0 == "-" }) {
                inMapping = line.hasSuffix(" " + path)
            } else if inMapping, line.hasPrefix("Rss:") {
                return Int(line.split(separator: " ").dropFirst().first ?? "")
            }
        }
        return nil
    }

    /// Sparse files are not read in place (a read fault on a tmpfs hole allocates a page, pread
    /// does not), nor are files once a Deallocate or Write Zeroes punched holes, nor with the option off.
    func testHolesAndTheOptionKeepReadsOnPread() throws {
        let (sparse, _) = try shmFile(bytes: 1 << 20, dense: false)
        let s = try FileBackend(path: sparse, readOnly: false)
        defer { s.close() }
        XCTAssertFalse(s.readsInPlace)
        XCTAssertNil(s.readInPlace(offset: 0, length: 4096))

        let (dense, _) = try shmFile(bytes: 1 << 20, dense: true)
        let off = try FileBackend(path: dense, readOnly: false, mapsTmpfsFiles: false)
        let ro = try FileBackend(path: dense, readOnly: true)
        defer { ro.close() }
        XCTAssertTrue(ro.readsInPlace, "a read-only namespace of the same file is mapped")
        defer { off.close() }
        XCTAssertFalse(off.readsInPlace)
        XCTAssertNil(off.readInPlace(offset: 0, length: 4096))

        for operation in [StorageOperation.deallocate(offset: 8192, length: 4096),
                          .writeZeroes(offset: 8192, length: 4096, deallocate: false)] {
            let (path, _) = try shmFile(bytes: 1 << 20, dense: true)
            let b = try FileBackend(path: path, readOnly: false)
            defer { b.close() }
            XCTAssertTrue(b.readsInPlace)
            _ = runOnce(b, operation)  // tmpfs has no ZERO_RANGE: what matters is the flag below
            XCTAssertFalse(b.readsInPlace, "\(operation)")
            XCTAssertNil(b.readInPlace(offset: 0, length: 4096), "\(operation)")
        }
    }

    /// Someone shrinks the file under the mapping: touching a page past the new end raises
    /// SIGBUS, which the mapping guard absorbs. The read in place is refused, pread takes over
    /// (short past the end, the file's bytes before it) and the process goes on; another
    /// file's mapping is unaffected.
    func testFileShrunkUnderTheMappingFallsBackToPread() throws {
        let (path, data) = try shmFile(bytes: 1 << 20, dense: true, seed: 3)
        let (otherPath, otherData) = try shmFile(bytes: 256 << 10, dense: true, seed: 4)
        let b = try FileBackend(path: path, readOnly: true)
        let other = try FileBackend(path: otherPath, readOnly: true)
        defer { b.close(); other.close() }
        XCTAssertNotNil(b.readInPlace(offset: 512 << 10, length: 8192), "mapped before the truncation")

        XCTAssertEqual(truncate(path, 64 << 10), 0)
        XCTAssertNil(b.readInPlace(offset: 512 << 10, length: 8192), "past the new end")
        XCTAssertFalse(b.readsInPlace)
        XCTAssertNil(b.readInPlace(offset: 0, length: 4096), "no more reads in place from this mapping")

        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 8192, alignment: 4096)
        defer { buffer.deallocate() }
        XCTAssertEqual(b.prepare(.read(buffer: buffer, length: 8192, offset: 512 << 10), sqe: noSQE), 0, "pread: past the end")
        XCTAssertEqual(b.prepare(.read(buffer: buffer, length: 8192, offset: 8192), sqe: noSQE), 8192)
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: buffer, count: 8192)), Array(data[8192..<16384]))

        XCTAssertFalse(b.writesInPlace)
        XCTAssertTrue(other.readsInPlace)
        let p = try XCTUnwrap(other.readInPlace(offset: 4096, length: 4096))
        XCTAssertEqual(Array(UnsafeRawBufferPointer(start: p, count: 4096)), Array(otherData[4096..<8192]))
    }
}
