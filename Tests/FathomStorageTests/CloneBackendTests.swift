import CLiburing
@testable import FathomStorage
import Foundation
import XCTest

/// The copy-on-write clone: reads fall through to the base, writes copy up whole chunks,
/// deallocate hands chunks back, and the map reaches the disk only behind the data.
final class CloneBackendTests: XCTestCase {
    var dir: String!
    var base: CloneBase!
    let chunk = 1 << CloneBackend.chunkShift

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "fathom-clone-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        // 4 chunks of base data: byte i of the base is i % 251.
        FileManager.default.createFile(atPath: dir + "/base.img", contents: Data((0..<(4 * chunk)).map { UInt8($0 % 251) }))
        base = try CloneBase(path: dir + "/base.img", blockSize: 512, identity: "base-1")
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    private func expectedBase(_ offset: Int, _ count: Int) -> [UInt8] { (offset..<(offset + count)).map { UInt8($0 % 251) } }

    private func run(_ b: BlockBackend, _ op: StorageOperation) -> Int32 { runOnce(b, op) }

    private func read(_ b: BlockBackend, _ offset: Int, _ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0xEE, count: count)
        let r = out.withUnsafeMutableBytes { run(b, .read(buffer: $0.baseAddress!, length: count, offset: UInt64(offset))) }
        XCTAssertEqual(r, Int32(count))
        return out
    }

    private func write(_ b: BlockBackend, _ offset: Int, _ bytes: [UInt8], fua: Bool = false) {
        var copy = bytes
        let r = copy.withUnsafeMutableBytes { run(b, .write(buffer: $0.baseAddress!, length: bytes.count, offset: UInt64(offset), forceUnitAccess: fua)) }
        XCTAssertEqual(r, Int32(bytes.count))
    }

    func testReadsFallThroughAndPartialWritesCopyUp() throws {
        let c = try CloneBackend(base: base, host: "h1", overlayPath: dir + "/h1.overlay")
        XCTAssertEqual(read(c, 100, 5000), expectedBase(100, 5000))
        // 512 bytes in the middle of chunk 1: the rest of the chunk must still read as base.
        write(c, chunk + 4096, [UInt8](repeating: 0xAB, count: 512))
        var want = expectedBase(0, 4 * chunk)
        want.replaceSubrange((chunk + 4096)..<(chunk + 4608), with: [UInt8](repeating: 0xAB, count: 512))
        XCTAssertEqual(read(c, 0, 4 * chunk), want, "a read spanning base and overlay chunks")
        XCTAssertEqual(c.writtenBytes, UInt64(chunk))
        // The base file itself is untouched.
        XCTAssertEqual([UInt8](try Data(contentsOf: URL(fileURLWithPath: dir + "/base.img"))), expectedBase(0, 4 * chunk))
    }

    /// Where each operation runs. A Read, and a Write to chunks already in the overlay, is one
    /// ring operation on the right file (a Read cut where its source changes; the engine asks
    /// again for the rest); a first write to a chunk, FUA, Flush, Write Zeroes and Deallocate go
    /// to a storage worker. Nothing the reactor calls blocks on a system call.
    func testReadsAndCopiedChunkWritesUseTheRingTheRestAWorker() throws {
        let c = try CloneBackend(base: base, host: "h", overlayPath: dir + "/h.overlay")
        write(c, chunk + 512, [UInt8](repeating: 0xCD, count: 512))  // chunk 1 copied up
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 3 * chunk, alignment: 4096)
        defer { buffer.deallocate() }
        var sqe = io_uring_sqe()
        func prepared(_ op: StorageOperation) -> Int32? { withUnsafeMutablePointer(to: &sqe) { p in c.prepare(op, sqe: { p }) } }

        XCTAssertNil(prepared(.read(buffer: buffer, length: 3 * chunk, offset: 0)))
        XCTAssertEqual(Int32(sqe.opcode), Int32(IORING_OP_READ.rawValue))
        XCTAssertEqual(sqe.fd, base.fd, "chunk 0 comes from the base")
        XCTAssertEqual(sqe.len, UInt32(chunk), "cut where chunk 1 (the overlay) starts")
        XCTAssertNil(prepared(.read(buffer: buffer, length: 2 * chunk, offset: UInt64(chunk + 512))))
        XCTAssertNotEqual(sqe.fd, base.fd, "chunk 1 comes from the overlay")
        XCTAssertEqual(sqe.len, UInt32(chunk - 512), "to the end of chunk 1")
        XCTAssertNil(prepared(.read(buffer: buffer, length: 2 * chunk, offset: UInt64(2 * chunk))))
        XCTAssertEqual(sqe.fd, base.fd)
        XCTAssertEqual(sqe.len, UInt32(2 * chunk), "chunks 2 and 3: one run of the base")

        XCTAssertNil(prepared(.write(buffer: buffer, length: 4096, offset: UInt64(chunk), forceUnitAccess: false)))
        XCTAssertEqual(Int32(sqe.opcode), Int32(IORING_OP_WRITE.rawValue), "chunk 1 is copied: a plain write to the overlay")
        XCTAssertNotEqual(sqe.fd, base.fd)
        for op in [StorageOperation.write(buffer: buffer, length: 4096, offset: UInt64(chunk - 2048), forceUnitAccess: false),
                   .write(buffer: buffer, length: 4096, offset: UInt64(chunk), forceUnitAccess: true),
                   .flush, .writeZeroes(offset: UInt64(chunk), length: 512, deallocate: false),
                   .deallocate(offset: 0, length: UInt64(chunk))] {
            XCTAssertEqual(prepared(op), StorageOperation.runsOnWorker, "\(op)")
        }
        // Run through the engine's path, the cut read is whole.
        var want = expectedBase(0, 3 * chunk)
        want.replaceSubrange((chunk + 512)..<(chunk + 1024), with: [UInt8](repeating: 0xCD, count: 512))
        XCTAssertEqual(read(c, 0, 3 * chunk), want)
    }

    func testHostsSeeOnlyTheirOwnWrites() throws {
        let a = try CloneBackend(base: base, host: "a", overlayPath: dir + "/a.overlay")
        let b = try CloneBackend(base: base, host: "b", overlayPath: dir + "/b.overlay")
        write(a, 0, [UInt8](repeating: 1, count: 4096))
        write(b, 0, [UInt8](repeating: 2, count: 4096))
        XCTAssertEqual(read(a, 0, 4096), [UInt8](repeating: 1, count: 4096))
        XCTAssertEqual(read(b, 0, 4096), [UInt8](repeating: 2, count: 4096))
        XCTAssertEqual(read(a, 4096, 4096), expectedBase(4096, 4096))
    }

    /// Without a flush the map never reached the disk: after a "crash" (the object dropped,
    /// as a killed process would), the clone reads as the base. After a flush (or FUA) it
    /// reads the host's data.
    func testOnlyFlushedWritesSurviveACrash() throws {
        var c: CloneBackend? = try CloneBackend(base: base, host: "h", overlayPath: dir + "/h.overlay")
        write(c!, 0, [UInt8](repeating: 7, count: 1024))
        c = nil
        c = try CloneBackend(base: base, host: "h", overlayPath: dir + "/h.overlay")
        XCTAssertEqual(read(c!, 0, 1024), expectedBase(0, 1024), "unflushed: base, never a half-copied chunk")
        write(c!, 0, [UInt8](repeating: 8, count: 1024))
        XCTAssertEqual(run(c!, .flush), 0)
        write(c!, 2 * chunk, [UInt8](repeating: 9, count: 512), fua: true)
        c = nil
        c = try CloneBackend(base: base, host: "h", overlayPath: dir + "/h.overlay")
        XCTAssertEqual(read(c!, 0, 1024), [UInt8](repeating: 8, count: 1024))
        XCTAssertEqual(read(c!, 1024, 1024), expectedBase(1024, 1024))
        XCTAssertEqual(read(c!, 2 * chunk, 512), [UInt8](repeating: 9, count: 512), "FUA persists too")
    }

    /// A new map's header is not synced at creation (a host's Connect creates it, on a reactor):
    /// a crash may leave the file empty. No bit was durable then, so it opens as a new clone
    /// instead of being refused as another base's.
    func testAMapLeftEmptyByACrashOpensAsANewClone() throws {
        var c: CloneBackend? = try CloneBackend(base: base, host: "h", overlayPath: dir + "/h.overlay")
        write(c!, 0, [UInt8](repeating: 7, count: 1024))
        c = nil
        XCTAssertEqual(truncate(dir + "/h.overlay.map", 0), 0)
        c = try CloneBackend(base: base, host: "h", overlayPath: dir + "/h.overlay")
        XCTAssertEqual(read(c!, 0, 1024), expectedBase(0, 1024))
        write(c!, 0, [UInt8](repeating: 8, count: 1024), fua: true)
        c = nil
        c = try CloneBackend(base: base, host: "h", overlayPath: dir + "/h.overlay")
        XCTAssertEqual(read(c!, 0, 1024), [UInt8](repeating: 8, count: 1024), "its header reached the disk with the first bits")
    }

    /// A clone's map holds a bit per 64 KiB chunk of the base: 8 MiB for a 4 TiB base. Only the
    /// pages with set bits are resident, so a host that wrote a little costs a little, when it
    /// connects and again after a restart (the map read back from its file).
    func testALargeBasesMapIsResidentOnlyWhereBitsAreSet() throws {
        let path = dir + "/large.img"
        XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: nil))
        XCTAssertEqual(truncate(path, off_t(4) << 40), 0, "a 4 TiB sparse base")
        let large = try CloneBase(path: path, blockSize: 4096, identity: "large")
        // Anonymous memory the process touched (a clear word read maps the shared zero page,
        // which does not count). AddressSanitizer's allocator adds its own, so not measured there.
        let measured = dlsym(nil, "__asan_init") == nil
        func anonymousBytes() -> Int {
            let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("RssAnon:") } ?? ""
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
        }
        let before = anonymousBytes()
        var c: CloneBackend? = try CloneBackend(base: large, host: "h", overlayPath: dir + "/large.overlay")
        let end = (UInt64(4) << 40) - UInt64(chunk)
        write(c!, Int(end), [UInt8](repeating: 3, count: 4096), fua: true)
        XCTAssertEqual(c!.writtenBytes, UInt64(chunk))
        if measured { XCTAssertLessThan(anonymousBytes() - before, 4 << 20, "not the whole 8 MiB bitmap") }
        c = nil
        let again = anonymousBytes()
        c = try CloneBackend(base: large, host: "h", overlayPath: dir + "/large.overlay")
        if measured { XCTAssertLessThan(anonymousBytes() - again, 4 << 20, "read back: still only the set bits' pages") }
        XCTAssertEqual(read(c!, Int(end), 4096), [UInt8](repeating: 3, count: 4096))
        XCTAssertEqual(c!.writtenBytes, UInt64(chunk))
    }

    func testDeallocateReturnsWholeChunksToTheBaseAndWriteZeroesZeroes() throws {
        let c = try CloneBackend(base: base, host: "h", overlayPath: dir + "/h.overlay")
        write(c, 0, [UInt8](repeating: 5, count: 2 * chunk))
        // Half a chunk: advisory, kept. One whole chunk: back to the base.
        XCTAssertEqual(run(c, .deallocate(offset: UInt64(chunk / 2), length: UInt64(chunk + chunk / 2))), 0)
        XCTAssertEqual(read(c, 0, chunk), [UInt8](repeating: 5, count: chunk))
        XCTAssertEqual(read(c, chunk, chunk), expectedBase(chunk, chunk))
        XCTAssertEqual(run(c, .writeZeroes(offset: UInt64(3 * chunk + 512), length: 1024, deallocate: true)), 0)
        XCTAssertEqual(read(c, 3 * chunk + 512, 1024), [UInt8](repeating: 0, count: 1024))
        XCTAssertEqual(read(c, 3 * chunk, 512), expectedBase(3 * chunk, 512))
        XCTAssertFalse(c.deallocatedReadsZero)
    }

    func testAMapOfAnotherBaseIsRefusedAndResetForgetsWrites() throws {
        let c = try CloneBackend(base: base, host: "h", overlayPath: dir + "/h.overlay")
        write(c, 0, [UInt8](repeating: 3, count: 512), fua: true)
        let other = try CloneBase(path: dir + "/base.img", blockSize: 512, identity: "base-2")
        XCTAssertThrowsError(try CloneBackend(base: other, host: "h", overlayPath: dir + "/h.overlay")) { e in
            XCTAssertTrue("\(e)".contains("does not match its base"), "\(e)")
        }
        XCTAssertEqual(c.reset(), 0)
        XCTAssertEqual(read(c, 0, 512), expectedBase(0, 512))
        XCTAssertEqual(c.writtenBytes, 0)
    }

    func testCloneSetCreatesPerHostClonesAndListsThemFromDisk() throws {
        let set = try CloneSet(base: base, directory: dir + "/overlays/ns", nsid: 1)
        write(set.backend(for: "nqn.host:a"), 0, [UInt8](repeating: 1, count: 512), fua: true)
        _ = set.backend(for: "nqn.host:b")
        XCTAssertEqual(set.list().map(\.host), ["nqn.host:a", "nqn.host:b"])
        // A new set (a restart) finds them on disk.
        let again = try CloneSet(base: base, directory: dir + "/overlays/ns", nsid: 1)
        XCTAssertEqual(again.list().map(\.host), ["nqn.host:a", "nqn.host:b"])
        try again.reset(host: "nqn.host:b", delete: true)
        XCTAssertEqual(again.list().map(\.host), ["nqn.host:a"])
        XCTAssertEqual(read(again.backend(for: "nqn.host:a"), 0, 512), [UInt8](repeating: 1, count: 512))
        // An anonymous host (empty host NQN) gets no clone: every operation fails, nothing is created.
        let anonymous = again.backend(for: "")
        XCTAssertTrue(anonymous is FailingBackend)
        var buffer = [UInt8](repeating: 0, count: 512)
        let result = buffer.withUnsafeMutableBytes {
            anonymous.prepare(.read(buffer: $0.baseAddress!, length: 512, offset: 0), sqe: { fatalError("no SQE expected") })
        }
        XCTAssertEqual(result, -EIO)
        XCTAssertEqual(again.list().map(\.host), ["nqn.host:a"])
    }
}
