import CNVMeTypes
import FathomTarget
import NVMeInitiator
import NVMeWire
import XCTest

/// The optional NVM commands: Write Zeroes, Dataset Management, Compare, Verify, Copy.
final class NVMCommandSetTests: XCTestCase {
    var harness: TargetHarness!
    var c: HostController!

    override func setUpWithError() throws {
        harness = try TargetHarness()
        c = try harness.controller(queues: 1)
    }

    override func tearDown() { harness.stop() }

    private func io(_ sqe: SubmissionQueueEntry, write: [UInt8] = []) throws -> NVMeStatus {
        try c.ioQueues[0].execute(sqe, write: write).status
    }

    private func lbaCommand(_ opcode: UInt8, lba: UInt64, blocks: Int, cdw12Extra: UInt32 = 0) -> SubmissionQueueEntry {
        SubmissionQueueEntry(opcode: opcode, commandID: 0, nsid: 1, cdw10: UInt32(truncatingIfNeeded: lba),
                             cdw11: UInt32(truncatingIfNeeded: lba >> 32), cdw12: UInt32(blocks - 1) | cdw12Extra)
    }

    func testIdentifyReportsExactlyTheImplementedCommands() throws {
        let id = try c.identify(cns: 1)
        let oncs = id.withUnsafeBytes { $0.baseAddress!.le16(520) }
        XCTAssertEqual(oncs, 0b1_1111_1101, "Compare, DSM, Write Zeroes, Save/Select, Reservations, Timestamp, Verify, Copy")
        let ns = try c.identify(cns: 0, nsid: 1)
        XCTAssertEqual(ns[33], 0x09, "DLFEAT: deallocated blocks read zeros, Write Zeroes may deallocate")
        ns.withUnsafeBytes {
            XCTAssertEqual($0.baseAddress!.le16(74), IOCommand.maxSingleSourceRange, "MSSRL")
            XCTAssertEqual($0.baseAddress!.le32(76), IOCommand.maxCopyLength, "MCL")
        }
        XCTAssertEqual(ns[80], IOCommand.maxSourceRangeCount, "MSRC")
        let effects = try c.getLogPage(0x05, length: 4096)
        for op in [0x05, 0x08, 0x09, 0x0C, 0x0D, 0x0E, 0x11, 0x15, 0x19] { XCTAssertNotEqual(effects[1024 + op * 4], 0, "opcode \(op) in the effects log") }
        XCTAssertEqual(effects[1024 + 0x08 * 4], 3, "Write Zeroes changes LBA content")
        XCTAssertEqual(effects[1024 + 0x0C * 4], 1, "Verify does not")
    }

    func testWriteZeroesWithAndWithoutDeallocateAndFUA() throws {
        for (extra, name) in [(UInt32(0), "plain"), (UInt32(1 << 25), "deallocate"), (UInt32(1 << 30), "fua")] {
            try c.write(lba: 512, data: pattern(64 * 1024, seed: 4))
            XCTAssertEqual(try io(lbaCommand(0x08, lba: 520, blocks: 16, cdw12Extra: extra)), .success, name)
            let back = try c.read(lba: 512, blocks: 128)
            XCTAssertEqual(Array(back[0..<4096]), Array(pattern(64 * 1024, seed: 4)[0..<4096]), "\(name): before the range untouched")
            XCTAssertTrue(back[4096..<(4096 + 8192)].allSatisfy { $0 == 0 }, "\(name): range zeroed")
            XCTAssertEqual(Array(back[(4096 + 8192)...]), Array(pattern(64 * 1024, seed: 4)[(4096 + 8192)...]), "\(name): after untouched")
        }
        XCTAssertEqual(try io(lbaCommand(0x08, lba: harness.blocks - 4, blocks: 8)), .lbaOutOfRange)
        // A large range (not bound by MDTS: no data moves).
        XCTAssertEqual(try io(lbaCommand(0x08, lba: 0, blocks: 65536)), .success)
        XCTAssertEqual(try c.read(lba: 65535 - 7, blocks: 8), [UInt8](repeating: 0, count: 4096))
    }

    func testDatasetManagementDeallocate() throws {
        try c.write(lba: 2048, data: pattern(256 * 1024, seed: 8))
        var ranges = [UInt8](repeating: 0, count: 3 * 16)
        ranges.withUnsafeMutableBytes { b in
            let p = b.baseAddress!
            p.put32(8, 4); p.put64(2048, 8)          // 4 KiB at 2048
            p.put32(0, 16 + 4); p.put64(0, 16 + 8)   // empty range: allowed
            p.put32(64, 32 + 4); p.put64(2048 + 256, 32 + 8)
        }
        let dsm = SubmissionQueueEntry(opcode: 0x09, commandID: 0, nsid: 1, cdw10: 2, cdw11: 1 << 2)
        XCTAssertEqual(try io(dsm, write: ranges), .success)
        let back = try c.read(lba: 2048, blocks: 512)
        let original = pattern(256 * 1024, seed: 8)
        XCTAssertTrue(back[0..<4096].allSatisfy { $0 == 0 })
        XCTAssertEqual(Array(back[4096..<(256 * 512)]), Array(original[4096..<(256 * 512)]))
        XCTAssertTrue(back[(256 * 512)..<(320 * 512)].allSatisfy { $0 == 0 })
        // Hints without AD do nothing; a range past the end fails; a wrong data length fails.
        try c.write(lba: 2048, data: Array(original[0..<4096]))
        XCTAssertEqual(try io(SubmissionQueueEntry(opcode: 0x09, commandID: 0, nsid: 1, cdw10: 2, cdw11: 1), write: ranges), .success)
        XCTAssertEqual(try c.read(lba: 2048, blocks: 8), Array(original[0..<4096]))
        var bad = [UInt8](repeating: 0, count: 16)
        bad.withUnsafeMutableBytes { $0.baseAddress!.put32(16, 4); $0.baseAddress!.put64(harness.blocks - 8, 8) }
        XCTAssertEqual(try io(SubmissionQueueEntry(opcode: 0x09, commandID: 0, nsid: 1, cdw10: 0, cdw11: 4), write: bad), .lbaOutOfRange)
        XCTAssertEqual(try io(SubmissionQueueEntry(opcode: 0x09, commandID: 0, nsid: 1, cdw10: 1, cdw11: 4), write: bad), .dataSGLLengthInvalid)
        // Linux may send a whole page behind one range: NR decides, extra bytes are ignored.
        try c.write(lba: 2048, data: Array(original[0..<4096]))
        var page = [UInt8](repeating: 0xEE, count: 4096)
        page.withUnsafeMutableBytes { $0.baseAddress!.put32(8, 4); $0.baseAddress!.put64(2048, 8) }
        XCTAssertEqual(try io(SubmissionQueueEntry(opcode: 0x09, commandID: 0, nsid: 1, cdw10: 0, cdw11: 4), write: page), .success)
        XCTAssertEqual(try c.read(lba: 2048, blocks: 8), [UInt8](repeating: 0, count: 4096))
    }

    func testCompareAndVerify() throws {
        let data = pattern(32 * 1024, seed: 12)
        try c.write(lba: 4096, data: data)
        XCTAssertEqual(try io(lbaCommand(0x05, lba: 4096, blocks: 64), write: data), .success)
        var other = data
        other[20000] ^= 1
        XCTAssertEqual(try io(lbaCommand(0x05, lba: 4096, blocks: 64), write: other), .compareFailure)
        // Larger than the in-capsule size: through R2T.
        let big = pattern(256 * 1024, seed: 13)
        try c.write(lba: 8192, data: big)
        XCTAssertEqual(try io(lbaCommand(0x05, lba: 8192, blocks: 512), write: big), .success)
        // Verify reads the range (several MDTS-sized chunks) and returns no data.
        XCTAssertEqual(try io(lbaCommand(0x0C, lba: 0, blocks: 4096)), .success)
        XCTAssertEqual(try io(lbaCommand(0x0C, lba: harness.blocks - 1, blocks: 2)), .lbaOutOfRange)
        // Both failures are in the error log, newest first.
        let log = try c.getLogPage(0x01, length: 128)
        log.withUnsafeBytes {
            XCTAssertEqual($0.baseAddress!.le16(12) >> 1 & 0x7FF, NVMeStatus.lbaOutOfRange.rawValue & 0x7FF)
            XCTAssertEqual($0.baseAddress!.le16(64 + 12) >> 1 & 0x7FF, NVMeStatus.compareFailure.rawValue & 0x7FF)
            XCTAssertEqual($0.baseAddress!.le64(0), $0.baseAddress!.le64(64) + 1, "error counts increase")
        }
    }

    func testCopyWithinTheNamespace() throws {
        let a = pattern(8 * 1024, seed: 21), b = pattern(600 * 1024, seed: 22)
        try c.write(lba: 100, data: a)
        try c.write(lba: 10_000, data: Array(b[0..<(512 * 1024)]))
        try c.write(lba: 11_024, data: Array(b[(512 * 1024)...]))
        var desc = [UInt8](repeating: 0, count: 2 * 32)
        desc.withUnsafeMutableBytes { p in
            p.baseAddress!.put64(100, 8); p.baseAddress!.put16(15, 16)            // 16 blocks
            p.baseAddress!.put64(10_000, 32 + 8); p.baseAddress!.put16(1199, 32 + 16)  // 1200 blocks: several chunks
        }
        let copy = SubmissionQueueEntry(opcode: 0x19, commandID: 0, nsid: 1, cdw10: 50_000, cdw12: 1 | 1 << 30)
        XCTAssertEqual(try io(copy, write: desc), .success)
        XCTAssertEqual(try c.read(lba: 50_000, blocks: 16), a)
        XCTAssertEqual(try c.read(lba: 50_016, blocks: 1024), Array(b[0..<(512 * 1024)]))
        XCTAssertEqual(try c.read(lba: 51_040, blocks: 176), Array(b[(512 * 1024)...]))
        // Limits: a range above MSSRL, a destination past the end, a bad descriptor format.
        var long = [UInt8](repeating: 0, count: 32)
        long.withUnsafeMutableBytes { $0.baseAddress!.put16(UInt16(IOCommand.maxSingleSourceRange), 16) }
        XCTAssertEqual(try io(SubmissionQueueEntry(opcode: 0x19, commandID: 0, nsid: 1, cdw10: 0, cdw12: 0), write: long),
                       .commandSizeLimitExceeded)
        XCTAssertEqual(try io(SubmissionQueueEntry(opcode: 0x19, commandID: 0, nsid: 1, cdw10: UInt32(harness.blocks - 4), cdw12: 0),
                              write: Array(desc[0..<32])), .lbaOutOfRange)
        XCTAssertEqual(try io(SubmissionQueueEntry(opcode: 0x19, commandID: 0, nsid: 1, cdw10: 0, cdw12: 1 << 8), write: Array(desc[0..<32])),
                       .invalidField)
    }

    func testWriteLikeCommandsOnAReadOnlyNamespace() throws {
        let ro = try harness.controller(queues: 1, hostNQN: TargetHarness.allowedHost, subsystem: TargetHarness.restrictedNQN)
        let q = ro.ioQueues[0]
        XCTAssertEqual(try q.execute(lbaCommand(0x08, lba: 0, blocks: 8)).status, .namespaceWriteProtected)
        XCTAssertEqual(try q.execute(SubmissionQueueEntry(opcode: 0x09, commandID: 0, nsid: 1, cdw10: 0, cdw11: 4),
                                     write: [UInt8](repeating: 0, count: 16)).status, .namespaceWriteProtected)
        XCTAssertEqual(try q.execute(SubmissionQueueEntry(opcode: 0x19, commandID: 0, nsid: 1, cdw12: 0),
                                     write: [UInt8](repeating: 0, count: 32)).status, .namespaceWriteProtected)
        // Reading commands work.
        XCTAssertEqual(try q.execute(lbaCommand(0x0C, lba: 0, blocks: 8)).status, .success)
        let data = try ro.read(lba: 0, blocks: 8)
        XCTAssertEqual(try q.execute(lbaCommand(0x05, lba: 0, blocks: 8), write: data).status, .success)
    }
}
