import FathomConfig
import FathomControl
import FathomDataset
import Foundation
import NVMeInitiator
import XCTest

/// 32 hosts attached to one read-only dataset namespace at once, each reading and verifying
/// its own range; the daemon's memory grows by per-connection buffers only (the dataset is
/// read through the page cache, never held per reader).
final class DatasetScaleTests: XCTestCase {
    func testThirtyTwoHostsReadOneDatasetAtOnce() throws {
        let h = try ControlHarness()
        defer { h.stop() }
        let hosts = 32, rangeBytes = 1 << 20
        let image = h.directory + "/dataset.img"
        let contents = Data((0..<(hosts * rangeBytes)).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) })
        FileManager.default.createFile(atPath: image, contents: contents)
        let digest = SHA256Digest.hex(try SHA256Digest.file(image))
        let nqn = "nqn.2026-11.io.fathom.test:dataset32"
        let r = try h.send("dataset.publish") { $0.subsystem = nqn; $0.path = image; $0.sha256 = digest }
        XCTAssertTrue(r.ok, r.error ?? "")

        let before = Self.residentBytes()
        let failures = NSLock()
        var errors: [String] = []
        var connected: [HostController?] = Array(repeating: nil, count: hosts)
        DispatchQueue.concurrentPerform(iterations: hosts) { k in
            do {
                let host = String(format: "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-4000-8000-%012d", k)
                let c = try HostController(host: "127.0.0.1", port: h.port, subsystemNQN: nqn, hostNQN: host)
                try c.enable()
                try c.createIOQueues(1)
                let first = k * rangeBytes / 512
                for piece in 0..<(rangeBytes / (128 << 10)) {
                    let lba = UInt64(first + piece * 256)
                    let got = try c.read(lba: lba, blocks: 256)
                    let start = Int(lba) * 512
                    if got != [UInt8](contents[start..<(start + (128 << 10))]) {
                        throw NSError(domain: "verify", code: k, userInfo: [NSLocalizedDescriptionKey: "host \(k) LBA \(lba) differs"])
                    }
                }
                failures.lock(); connected[k] = c; failures.unlock()
            } catch {
                failures.lock(); errors.append("host \(k): \(error)"); failures.unlock()
            }
        }
        XCTAssertEqual(errors, [])
        XCTAssertEqual(h.server.target.liveControllers.filter { $0.subsystem.nqn == nqn }.count, hosts)
        let grown = Self.residentBytes() - before
        // Per connection: a staging buffer and a few in-flight data buffers, well under 2 MiB;
        // the 32 MiB dataset itself must not be resident per reader.
        XCTAssertLessThan(grown, Int64(hosts) * (2 << 20), "RSS grew by \(grown >> 10) KiB for \(hosts) readers")
        print("32 readers: RSS +\(grown >> 10) KiB (\((grown / Int64(hosts)) >> 10) KiB per connection)")
        connected.removeAll()
    }

    static func residentBytes() -> Int64 {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
              let kib = Int64(line.split(separator: " ").dropFirst().first ?? "") else { return 0 }
        return kib << 10
    }
}
