import CLiburing
import FathomStorage
import FathomTestSupport
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// The file backend driven through a real io_uring, as the reactor drives it.
final class FileBackendTests: XCTestCase {
    var path = ""

    override func setUpWithError() throws {
        path = "/tmp/fathom-storage-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).img"
        try FileBackend.createSparse(path: path, bytes: 8 * 1024 * 1024)
    }

    override func tearDown() { unlink(path) }

    func testGeometryAndSparseAllocation() throws {
        let b = try FileBackend(path: path, readOnly: false)
        defer { b.close() }
        XCTAssertEqual(b.blockCount, 16384)
        XCTAssertEqual(b.blockSizeShift, 9)
        XCTAssertFalse(b.usesDirectIO)
        XCTAssertLessThan(b.allocatedBlocks(), 16, "sparse image: nothing allocated yet")
        let b4k = try FileBackend(path: path, readOnly: true, blockSize: 4096)
        defer { b4k.close() }
        XCTAssertEqual(b4k.blockCount, 2048)
    }

    func testWriteFUAReadFlushThroughTheRing() throws {
        let b = try FileBackend(path: path, readOnly: false)
        defer { b.close() }
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 8192, alignment: 4096)
        defer { buf.deallocate() }
        for i in 0..<8192 { buf.storeBytes(of: UInt8(truncatingIfNeeded: i * 7), toByteOffset: i, as: UInt8.self) }
        XCTAssertEqual(runOnce(b, .write(buffer: buf, length: 8192, offset: 4096, forceUnitAccess: true)), 8192)
        XCTAssertEqual(runOnce(b, .flush), 0)
        let back = UnsafeMutableRawPointer.allocate(byteCount: 8192, alignment: 4096)
        defer { back.deallocate() }
        XCTAssertEqual(runOnce(b, .read(buffer: back, length: 8192, offset: 4096)), 8192)
        XCTAssertEqual(memcmp(buf, back, 8192), 0)
        XCTAssertGreaterThanOrEqual(b.allocatedBlocks(), 16)
    }

    /// On tmpfs, reads, writes and flushes finish at once without taking an SQE (io_uring would
    /// hand each to a worker thread); on a disk filesystem they go to the ring.
    func testFilesOnTmpfsCompleteWithoutTheRing() throws {
        try XCTSkipUnless(filesystemType(holding: "/dev/shm") == "tmpfs", "/dev/shm is not a tmpfs here")
        let shmPath = "/dev/shm/fathom-storage-\(getpid()).img"
        try FileBackend.createSparse(path: shmPath, bytes: 1024 * 1024)
        defer { unlink(shmPath) }
        let b = try FileBackend(path: shmPath, readOnly: false)
        defer { b.close() }
        XCTAssertTrue(b.completesInline)
        guard b.completesInline else { return }  // the rest would take SQEs
        let data = UnsafeMutableRawPointer.allocate(byteCount: 8192, alignment: 4096)
        let back = UnsafeMutableRawPointer.allocate(byteCount: 8192, alignment: 4096)
        defer { data.deallocate(); back.deallocate() }
        for i in 0..<8192 { data.storeBytes(of: UInt8(truncatingIfNeeded: i * 5 + 3), toByteOffset: i, as: UInt8.self) }
        let noSQE: () -> UnsafeMutablePointer<io_uring_sqe> = { fatalError("an operation on tmpfs took an SQE") }
        XCTAssertEqual(b.prepare(.write(buffer: data, length: 8192, offset: 4096, forceUnitAccess: true), sqe: noSQE), 8192)
        XCTAssertEqual(b.prepare(.flush, sqe: noSQE), 0)
        XCTAssertEqual(b.prepare(.read(buffer: back, length: 8192, offset: 4096), sqe: noSQE), 8192)
        XCTAssertEqual(memcmp(data, back, 8192), 0)
        XCTAssertEqual(b.prepare(.read(buffer: back, length: 8192, offset: 1024 * 1024), sqe: noSQE), 0, "past the end: nothing, no error")

        // The fixture's file, elsewhere: on the ring (unless that is a memory filesystem too).
        let onDisk = try FileBackend(path: path, readOnly: true)
        defer { onDisk.close() }
        let fixtureType = filesystemType(holding: path)
        if fixtureType != "tmpfs" && fixtureType != "ramfs" { XCTAssertFalse(onDisk.completesInline) }
    }

    func testReadOnlyRefusesWrites() throws {
        let b = try FileBackend(path: path, readOnly: true)
        defer { b.close() }
        let buf = UnsafeMutableRawPointer.allocate(byteCount: 512, alignment: 4096)
        defer { buf.deallocate() }
        XCTAssertEqual(runOnce(b, .write(buffer: buf, length: 512, offset: 0, forceUnitAccess: false)), -EROFS)
    }

    func testOpenErrorsSayWhatIsWrong() {
        XCTAssertThrowsError(try FileBackend(path: "/nonexistent/fathom.img", readOnly: false)) {
            XCTAssertTrue("\($0)".contains("/nonexistent/fathom.img"))
            XCTAssertTrue("\($0)".contains("No such file"))
        }
        XCTAssertThrowsError(try FileBackend(path: "/tmp", readOnly: false)) {
            XCTAssertTrue("\($0)".contains("not a regular file or block device"))
        }
    }
}
