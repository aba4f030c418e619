import CNVMeTypes
import Dispatch
import FathomConfig
import FathomReactor
import Foundation
import Logging
import NVMeInitiator
import NVMeWire
import Synchronization
import XCTest

/// One host's clone driven from four I/O queues on two reactors at once: every 64 KiB chunk is
/// shared by all four queues (each owns every fourth 4 KiB granule), and they first walk the
/// chunks in step, so first writes to a chunk race each other's copy-ups on storage workers while Reads and Writes to copied
/// chunks go through two rings. Every Read is checked against a model; afterwards the whole
/// clone is, through reads that cross chunks of both sources, again after whole chunks are
/// handed back to the base, and again after a restart (what was flushed is on disk).
final class CloneStressTests: XCTestCase {
    let nqn = "nqn.2026-11.io.fathom.test:clone-stress"
    let granule = 4096
    let granules = 2048  // 8 MiB: 128 chunks
    var directory: String!
    var base: [UInt8] = []

    override func setUpWithError() throws {
        var template = Array("/tmp/fathom-clone-stress-XXXXXX".utf8CString)
        directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        base = pattern(granules * granule, seed: 0xBA5E)
        XCTAssertTrue(FileManager.default.createFile(atPath: directory + "/base.img", contents: Data(base)))
    }

    override func tearDown() { try? FileManager.default.removeItem(atPath: directory) }

    private func startServer() throws -> FathomServer {
        let config = try TargetConfig.parse(json: Array("""
        {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "0", "trtype": "tcp"}, "portid": 1, "subsystems": ["\(nqn)"]}],
         "subsystems": [{"nqn": "\(nqn)", "attr": {"allow_any_host": "1"}, "namespaces": [
            {"nsid": 1, "device": {"backend": "clone", "path": "\(directory!)/base.img", "overlay_dir": "\(directory!)/overlays",
                                   "nguid": "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "uuid": "3c2b1a09-8f7e-4d6c-9b5a-49382716a5b4"}}]}]}
        """.utf8))
        var logger = Logger(label: "clone-stress") { StreamLogHandler.standardError(label: $0) }
        logger.logLevel = .critical
        let server = try FathomServer(config: config, reactorCount: 2, logger: logger)
        try server.start()
        return server
    }

    private func connect(_ server: FathomServer, queues: Int) throws -> HostController {
        let c = try HostController(host: "127.0.0.1", port: server.boundPorts[0], subsystemNQN: nqn)
        try c.enable()
        try c.createIOQueues(queues)
        return c
    }

    /// Reads the whole clone in `piece`-byte reads starting at `start` and compares with `model`.
    private func verifyAll(_ c: HostController, _ model: [UInt8], piece: Int, start: Int = 0, _ what: String) throws {
        var offset = start
        while offset < model.count {
            let n = min(piece, model.count - offset)
            let got = try c.read(lba: UInt64(offset / 512), blocks: n / 512)
            guard got == Array(model[offset..<(offset + n)]) else {
                return XCTFail("\(what): bytes \(offset)..<\(offset + n) differ from the model")
            }
            offset += n
        }
    }

    func testFourQueuesOnTwoReactorsShareEveryChunk() throws {
        var server = try startServer()
        let c = try connect(server, queues: 4)
        let failures = Mutex<[String]>([])
        let written = Mutex<[Int: [UInt8]]>([:])  // granule → its bytes, as each queue left it
        DispatchQueue.concurrentPerform(iterations: 4) { q in
            var mine: [Int: [UInt8]] = [:]
            let own = stride(from: q, to: granules, by: 4).map { $0 }
            func expected(_ g: Int) -> [UInt8] { mine[g] ?? Array(base[(g * granule)..<((g + 1) * granule)]) }
            do {
                // All four walk the chunks in step: each chunk's first writes (copy-ups) race.
                for chunk in 0..<(granules / 16) {
                    let g = chunk * 16 + q + 4 * Int.random(in: 0..<4)
                    let data = pattern(granule, seed: UInt64(q << 20 | chunk) ^ 0xC0)
                    try c.write(queue: q, lba: UInt64(g * granule / 512), data: data)
                    mine[g] = data
                }
                for op in 0..<400 {
                    let g = own.randomElement()!
                    let lba = UInt64(g * granule / 512)
                    switch Int.random(in: 0..<20) {
                    case 0..<8:  // a whole granule, sometimes FUA
                        let data = pattern(granule, seed: UInt64(q << 20 | op))
                        try c.write(queue: q, lba: lba, data: data, fua: op % 7 == 0)
                        mine[g] = data
                    case 8..<10:  // one block inside the granule: the rest of the chunk is copied up around it
                        let block = Int.random(in: 0..<8)
                        let data = pattern(512, seed: UInt64(q << 20 | op) ^ 0x55)
                        try c.write(queue: q, lba: lba + UInt64(block), data: data)
                        var now = expected(g)
                        now.replaceSubrange((block * 512)..<((block + 1) * 512), with: data)
                        mine[g] = now
                    case 10..<11:
                        let r = try c.ioQueues[q].execute(SubmissionQueueEntry(
                            opcode: UInt8(nvme_cmd_write_zeroes.rawValue), commandID: 0, nsid: 1,
                            cdw10: UInt32(truncatingIfNeeded: lba), cdw11: UInt32(truncatingIfNeeded: lba >> 32), cdw12: 7))
                        guard r.status.isSuccess else { throw TestFailure("Write Zeroes: \(r.status)") }
                        mine[g] = [UInt8](repeating: 0, count: granule)
                    case 11..<12:
                        try c.flush(queue: q)
                    default:
                        let got = try c.read(queue: q, lba: lba, blocks: granule / 512)
                        if got != expected(g) { throw TestFailure("queue \(q) op \(op): granule \(g) read back wrong") }
                    }
                }
            } catch {
                failures.withLock { $0.append("queue \(q): \(error)") }
            }
            written.withLock { all in for (g, bytes) in mine { all[g] = bytes } }
        }
        XCTAssertEqual(failures.withLock { $0 }, [])
        var model = base
        for (g, bytes) in written.withLock({ $0 }) { model.replaceSubrange((g * granule)..<((g + 1) * granule), with: bytes) }
        try c.flush()
        try verifyAll(c, model, piece: 65536, "after the run, chunk by chunk")
        try verifyAll(c, model, piece: 48 * 1024, start: 40 * 1024, "reads crossing chunks")

        // Whole chunks 3...5 handed back: they read as the base again (DLFEAT 0).
        var ranges = [UInt8](repeating: 0, count: 16)
        ranges.withUnsafeMutableBytes {
            $0.storeBytes(of: UInt32(3 * 128).littleEndian, toByteOffset: 4, as: UInt32.self)  // 3 chunks of 128 blocks
            $0.storeBytes(of: UInt64(3 * 128).littleEndian, toByteOffset: 8, as: UInt64.self)
        }
        let dsm = try c.ioQueues[0].execute(SubmissionQueueEntry(opcode: UInt8(nvme_cmd_dsm.rawValue), commandID: 0, nsid: 1,
                                                                 cdw10: 0, cdw11: 1 << 2), write: ranges)
        XCTAssertTrue(dsm.status.isSuccess, "\(dsm.status)")
        model.replaceSubrange((3 * 65536)..<(6 * 65536), with: base[(3 * 65536)..<(6 * 65536)])
        try verifyAll(c, model, piece: 32 * 1024, "after Deallocate")
        try c.flush()

        // A restart reopens the clone from its overlay and map: everything flushed is there.
        server.stop()
        server = try startServer()
        defer { server.stop() }
        let again = try connect(server, queues: 1)
        try verifyAll(again, model, piece: 64 * 1024, "after a restart")
    }
}

private struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
