import FathomDataset
import Foundation
import XCTest

final class DatasetTests: XCTestCase {
    var dir: String!

    override func setUp() {
        dir = NSTemporaryDirectory() + "fathom-ds-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: dir + "/src/a/b", withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    private func write(_ rel: String, _ bytes: Int) {
        FileManager.default.createFile(atPath: dir + "/src/" + rel, contents: Data((0..<bytes).map { UInt8(truncatingIfNeeded: $0 &* 31) }))
    }

    func testDigestMatchesKnownVector() throws {
        let path = dir + "/abc"
        FileManager.default.createFile(atPath: path, contents: Data("abc".utf8))
        XCTAssertEqual(SHA256Digest.hex(try SHA256Digest.file(path)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    func testScanCountsAndRefusesUnsafeEntries() throws {
        write("a/one.bin", 1000)
        write("a/b/two.bin", 5000)
        try FileManager.default.createSymbolicLink(atPath: dir + "/src/inside", withDestinationPath: "a/one.bin")
        var tree = try DatasetTree.scan(dir + "/src")
        XCTAssertEqual(tree.files, 2)
        XCTAssertEqual(tree.bytes, 6000)
        XCTAssertEqual(tree.symlinks, 1)
        XCTAssertEqual(tree.problems, [])
        try FileManager.default.createSymbolicLink(atPath: dir + "/src/a/escape", withDestinationPath: "../../../etc/passwd")
        try FileManager.default.createSymbolicLink(atPath: dir + "/src/abs", withDestinationPath: "/etc/hostname")
        XCTAssertEqual(mkfifo(dir + "/src/a/b/pipe", 0o644), 0)
        tree = try DatasetTree.scan(dir + "/src")
        XCTAssertEqual(tree.problems.count, 3, "\(tree.problems)")
        XCTAssertTrue(tree.problems.contains { $0.contains("escape") && $0.contains("points out of") })
        XCTAssertTrue(tree.problems.contains { $0.contains("pipe") && $0.contains("special file") })
        var builder = DatasetBuilder(source: dir + "/src", image: dir + "/x.img", format: .ext4)
        builder.progress = { _ in }
        XCTAssertThrowsError(try builder.build()) { e in
            XCTAssertTrue("\(e)".contains("cannot be packed safely (3 problem(s))"), "\(e)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/x.img"), "nothing written for an unsafe tree")
    }

    /// Both formats: the image exists, the manifest describes it, and the check catches a change.
    func testBuildWritesImageAndManifestThatVerify() throws {
        write("a/one.bin", 100_000)
        write("a/b/two.bin", 3)
        for format in DatasetBuilder.Format.allCases {
            let image = dir + "/ds.\(format.rawValue)"
            var builder = DatasetBuilder(source: dir + "/src", image: image, format: format)
            var lines: [String] = []
            builder.progress = { lines.append($0) }
            let m: DatasetManifest
            do { m = try builder.build() } catch { return XCTFail("\(format): \(error)") }
            XCTAssertEqual(m.files, 2)
            XCTAssertEqual(m.bytes, 100_003)
            XCTAssertEqual(m.format, format.rawValue)
            XCTAssertEqual(try DatasetManifest.load(forImage: image), m)
            XCTAssertEqual(m.sha256, SHA256Digest.hex(try SHA256Digest.file(image)))
            XCTAssertNoThrow(try DatasetCheck.verify(image: image, manifest: m))
            XCTAssertTrue(lines.contains { $0.contains("2 files") }, "\(lines)")
            // One byte changed: publish must refuse it.
            let fd = open(image, O_WRONLY)
            _ = pwrite(fd, [0xFF], 1, 100)
            close(fd)
            XCTAssertThrowsError(try DatasetCheck.verify(image: image, manifest: m)) { e in
                XCTAssertTrue("\(e)".contains("changed since it was built"))
            }
        }
    }

    func testIdentifiersComeFromTheDigest() {
        let hex = String(repeating: "ab", count: 16) + String(repeating: "cd", count: 16)
        let ids = DatasetManifest.identifiers(sha256: hex)!
        XCTAssertEqual(ids.nguid, [UInt8](repeating: 0xAB, count: 16))
        XCTAssertEqual(ids.uuid[6] >> 4, 8, "UUID version 8")
        XCTAssertEqual(ids.uuid[8] >> 6, 2, "RFC variant")
        XCTAssertNil(DatasetManifest.identifiers(sha256: "xyz"))
    }
}
