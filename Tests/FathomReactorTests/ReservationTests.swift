import FathomConfig
import FathomReactor
import FathomTarget
import Logging
import NVMeInitiator
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Reservations between hosts sharing a namespace: registration, every acquire path,
/// conflicts on I/O, notifications, and persistence through a restart (PTPL).
final class ReservationTests: XCTestCase {
    let hostA = "nqn.2026-11.io.fathom.test:host-aaaaaaaaaaaaaaaa"
    let hostB = "nqn.2026-11.io.fathom.test:host-bbbbbbbbbbbbbbbb"
    let hostC = "nqn.2026-11.io.fathom.test:host-cccccccccccccccc"
    var harness: TargetHarness!

    override func setUpWithError() throws { harness = try TargetHarness() }
    override func tearDown() { harness.stop() }

    private func host(_ nqn: String) throws -> HostController {
        try harness.controller(queues: 1, hostNQN: nqn)
    }

    private func report(_ c: HostController) throws -> (gen: UInt32, type: UInt8, count: Int, ptpl: UInt8, entries: [(cntlid: UInt16, holds: Bool, key: UInt64)]) {
        let r = try c.reservationReport()
        XCTAssertTrue(r.status.isSuccess)
        return r.data.withUnsafeBytes { b in
            let p = b.baseAddress!
            let n = Int(p.le16(5))
            return (p.le32(0), p.le8(4), n, p.le8(9),
                    (0..<n).map { k in (p.le16(64 + 64 * k), p.le8(64 + 64 * k + 2) & 1 == 1, p.le64(64 + 64 * k + 8)) })
        }
    }

    private func writeStatus(_ c: HostController) throws -> NVMeStatus {
        try c.ioQueues[0].execute(HostController.writeCommand(nsid: 1, lba: 0, blocks: 1), write: pattern(512, seed: 1)).status
    }

    private func readStatus(_ c: HostController) throws -> NVMeStatus {
        try c.ioQueues[0].execute(HostController.readCommand(nsid: 1, lba: 0, blocks: 1), readLength: 512).status
    }

    func testRegisterAcquirePreemptReleaseAndConflicts() throws {
        let a = try host(hostA), b = try host(hostB)
        XCTAssertEqual(try c_identifyRescap(a), 0xFE, "all types and IEKEY; no PTPL without a state directory")
        XCTAssertEqual(try a.reservationRegister(action: 0, newKey: 0xA), .success)
        XCTAssertEqual(try a.reservationRegister(action: 0, newKey: 0xA), .success, "same key again is fine")
        XCTAssertEqual(try a.reservationRegister(action: 0, newKey: 0xF), .reservationConflict)
        XCTAssertEqual(try b.reservationRegister(action: 0, newKey: 0xB), .success)
        var r = try report(a)
        XCTAssertEqual(r.count, 2)
        XCTAssertEqual(r.gen, 2)
        XCTAssertEqual(r.type, 0)
        XCTAssertEqual(try a.reservationReport(extended: false).status, .hostIdentifierInconsistentFormat)

        // A holds Write Exclusive: B may read, not write.
        XCTAssertEqual(try a.reservationAcquire(action: 0, type: 1, currentKey: 0xB), .reservationConflict, "wrong key")
        XCTAssertEqual(try a.reservationAcquire(action: 0, type: 1, currentKey: 0xA), .success)
        XCTAssertEqual(try b.reservationAcquire(action: 0, type: 1, currentKey: 0xB), .reservationConflict)
        XCTAssertEqual(try writeStatus(a), .success)
        XCTAssertEqual(try readStatus(b), .success)
        XCTAssertEqual(try writeStatus(b), .reservationConflict)
        r = try report(b)
        XCTAssertEqual(r.type, 1)
        XCTAssertEqual(r.entries.filter(\.holds).map(\.key), [0xA])

        // B preempts A into Exclusive Access: A loses its registration and all access.
        XCTAssertTrue(try a.setFeature(0x0B, 0).status.isSuccess)
        let aer = try a.admin.submit(SubmissionQueueEntry(opcode: 0x0C, commandID: 800))
        XCTAssertEqual(try b.reservationAcquire(action: 1, type: 2, currentKey: 0xB, preemptKey: 0xA), .success)
        XCTAssertEqual(try readStatus(a), .reservationConflict)
        XCTAssertEqual(try writeStatus(a), .reservationConflict)
        XCTAssertEqual(try writeStatus(b), .success)
        XCTAssertEqual(try a.admin.wait(aer).cqe.dw0, 0x0080_0006, "reservation log page available")
        let notice = try a.getLogPage(0x80, length: 64)
        XCTAssertEqual(notice[8], 1, "registration preempted")
        notice.withUnsafeBytes { XCTAssertEqual($0.baseAddress!.le32(12), 1, "nsid") }
        XCTAssertEqual(try a.getLogPage(0x80, length: 64)[8], 0, "read once, then empty")
        r = try report(b)
        XCTAssertEqual(r.count, 1)
        XCTAssertEqual(r.type, 2)

        // Release needs the right type; then everyone may write again.
        XCTAssertEqual(try b.reservationRelease(action: 0, type: 1, currentKey: 0xB), .invalidField)
        XCTAssertEqual(try b.reservationRelease(action: 0, type: 2, currentKey: 0xB), .success)
        XCTAssertEqual(try writeStatus(a), .success)

        // Replace and unregister with and without the key.
        XCTAssertEqual(try b.reservationRegister(action: 2, currentKey: 0xB, newKey: 0xBB), .success)
        XCTAssertEqual(try b.reservationRegister(action: 1, currentKey: 0xB), .reservationConflict)
        XCTAssertEqual(try b.reservationRegister(action: 1, ignoreKey: true), .success)
        XCTAssertEqual(try report(a).count, 0)
    }

    func testRegistrantsOnlyAndClear() throws {
        let a = try host(hostA), b = try host(hostB), c = try host(hostC)
        XCTAssertEqual(try a.reservationRegister(action: 0, newKey: 1), .success)
        XCTAssertEqual(try b.reservationRegister(action: 0, newKey: 2), .success)
        XCTAssertEqual(try a.reservationAcquire(action: 0, type: 3, currentKey: 1), .success)  // WE - registrants only
        XCTAssertEqual(try writeStatus(b), .success, "registrants write")
        XCTAssertEqual(try writeStatus(c), .reservationConflict, "others do not")
        XCTAssertEqual(try readStatus(c), .success, "but may read")
        // All registrants: every registrant holds it.
        XCTAssertEqual(try a.reservationRelease(action: 0, type: 3, currentKey: 1), .success)
        XCTAssertEqual(try b.reservationAcquire(action: 0, type: 6, currentKey: 2), .success)  // EA - all registrants
        XCTAssertEqual(try a.reservationAcquire(action: 0, type: 6, currentKey: 1), .success, "a registrant holds it too")
        XCTAssertEqual(try readStatus(c), .reservationConflict)
        XCTAssertTrue(try report(a).entries.allSatisfy(\.holds))
        // Clear drops everything.
        XCTAssertEqual(try b.reservationRelease(action: 1, type: 0, currentKey: 2), .success)
        XCTAssertEqual(try report(c).count, 0)
        XCTAssertEqual(try writeStatus(c), .success)
        XCTAssertEqual(try b.reservationRelease(action: 1, type: 0, currentKey: 2), .reservationConflict, "no longer registered")
    }

    /// Restarts the target with a fresh state directory (reservations kept through power
    /// loss need one); the caller removes it.
    private func restartWithStateDirectory(reactors: Int = 2) throws -> (String, TargetSettings) {
        harness.stop()
        var template = Array("/tmp/fathom-ptpl-XXXXXX".utf8CString)
        let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        var settings = TargetSettings()
        settings.stateDirectory = dir
        harness = try TargetHarness(settings: settings, reactors: reactors)
        return (dir, settings)
    }

    private func c_identifyRescap(_ c: HostController) throws -> UInt8 { try c.identify(cns: 0, nsid: 1)[31] }

    /// One reactor; hosts A and B connected, A registered with Persist Through Power Loss on,
    /// and the state file's next save made to wait: its temporary file is a FIFO, so the save
    /// blocks in `open` until `letTheSaveGoOn` opens the other end.
    private func registeredWithTheNextSaveWaiting() throws -> (dir: String, a: HostController, b: HostController, fifo: String) {
        let (dir, _) = try restartWithStateDirectory(reactors: 1)
        let a = try host(hostA), b = try host(hostB)
        XCTAssertEqual(try a.reservationRegister(action: 0, newKey: 0x77, changePTPL: 3), .success)
        let file = dir + "/reservations-00112233445566778899aabbccddeeff"
        XCTAssertTrue(FileManager.default.fileExists(atPath: file), "PTPL state saved")
        XCTAssertEqual(mkfifo(file + ".tmp", 0o600), 0)
        return (dir, a, b, file + ".tmp")
    }

    /// Lets the waiting save write into the FIFO; it then fails (a FIFO cannot be fsynced).
    /// Returns the reading end, for the caller to close once the command has completed.
    private func letTheSaveGoOn(_ fifo: String) -> Int32 {
        let reader = open(fifo, O_RDONLY)
        var sink = [UInt8](repeating: 0, count: 4096)
        _ = read(reader, &sink, sink.count)
        return reader
    }

    /// A reservation change kept through power loss writes and syncs a file before it
    /// completes. That runs on a storage worker: with one reactor serving both hosts, another
    /// host's I/O goes on while the save waits (its temporary file is made a FIFO, so it blocks
    /// until the test reads it), and the command completes afterwards with the save's outcome.
    func testAPersistedReservationChangeStallsNoOtherHost() throws {
        let (dir, a, b, fifo) = try registeredWithTheNextSaveWaiting()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var keys = [UInt8](repeating: 0, count: 16)
        keys.withUnsafeMutableBytes { $0.storeBytes(of: UInt64(0x77).littleEndian, as: UInt64.self) }
        let acquire = try a.ioQueues[0].submit(SubmissionQueueEntry(opcode: 0x11, commandID: 0, nsid: 1, cdw10: 2 << 8), write: keys)
        usleep(200_000)
        XCTAssertEqual(try writeStatus(b), .success, "B's I/O is served while A's save waits (nothing held yet)")
        XCTAssertEqual(try readStatus(b), .success)
        let reader = letTheSaveGoOn(fifo)
        XCTAssertEqual(try a.ioQueues[0].wait(acquire).status, .internalError, "a save that failed: nothing changed")
        close(reader)
        XCTAssertEqual(try writeStatus(b), .success)
        unlink(fifo)
        XCTAssertEqual(try a.reservationAcquire(action: 0, type: 2, currentKey: 0x77), .success)
        XCTAssertEqual(try writeStatus(b), .reservationConflict)
    }

    /// Set Features Reservation Persistence (an admin command) saves the same file: it too
    /// completes from a storage worker, so while its save waits, the other host's I/O, the
    /// same host's I/O and its admin queue's other commands are all served.
    func testSettingReservationPersistenceStallsNothingElse() throws {
        let (dir, a, b, fifo) = try registeredWithTheNextSaveWaiting()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // PTPL off: the state leaves power-loss persistence, which saves the file once more.
        let set = try a.admin.submit(SubmissionQueueEntry(opcode: 0x09, commandID: 0, nsid: 1, cdw10: 0x83, cdw11: 0))
        usleep(200_000)
        XCTAssertEqual(try writeStatus(b), .success, "B's I/O is served while A's save waits")
        XCTAssertEqual(try writeStatus(a), .success, "and A's own I/O")
        XCTAssertEqual(try a.getFeature(0x0B).status, .success, "and A's other admin commands")
        XCTAssertEqual(try a.admin.execute(SubmissionQueueEntry(opcode: 0x0A, commandID: 0, nsid: 1, cdw10: 0x83)).cqe.dw0, 1,
                       "PTPL still on until the save is done")
        let reader = letTheSaveGoOn(fifo)
        XCTAssertEqual(try a.admin.wait(set).status, .internalError, "a save that failed: nothing changed")
        close(reader)
        unlink(fifo)
        XCTAssertEqual(try a.admin.execute(SubmissionQueueEntry(opcode: 0x0A, commandID: 0, nsid: 1, cdw10: 0x83)).cqe.dw0, 1)
        XCTAssertEqual(try a.setFeature(0x83, 0).status, .invalidNamespace, "Reservation Persistence is per namespace")
        XCTAssertEqual(try a.admin.execute(SubmissionQueueEntry(opcode: 0x09, commandID: 0, nsid: 1, cdw10: 0x83, cdw11: 0)).status, .success)
        XCTAssertEqual(try a.admin.execute(SubmissionQueueEntry(opcode: 0x0A, commandID: 0, nsid: 1, cdw10: 0x83)).cqe.dw0, 0)
        XCTAssertEqual(try a.admin.execute(SubmissionQueueEntry(opcode: 0x09, commandID: 0, nsid: 1, cdw10: 0x83 | 1 << 31, cdw11: 1)).status,
                       .featureNotSaveable, "refused before anything runs elsewhere")
    }

    func testPersistThroughPowerLossAcrossRestart() throws {
        let (dir, settings) = try restartWithStateDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var a = try host(hostA)
        XCTAssertEqual(try c_identifyRescap(a), 0xFF, "PTPL capable")
        XCTAssertEqual(try a.reservationRegister(action: 0, newKey: 0x77, changePTPL: 3), .success)
        XCTAssertEqual(try a.reservationAcquire(action: 0, type: 2, currentKey: 0x77), .success)
        XCTAssertEqual(try a.getFeature(0x83).status, .invalidNamespace, "Reservation Persistence is per namespace")
        harness.stop()
        // Same configuration and state directory: a new process sees the reservation.
        harness = try TargetHarness(settings: settings)
        a = try host(hostA)
        let b = try host(hostB)
        let r = try report(a)
        XCTAssertEqual(r.count, 1)
        XCTAssertEqual(r.type, 2)
        XCTAssertEqual(r.ptpl, 1)
        XCTAssertEqual(try writeStatus(b), .reservationConflict)
        XCTAssertEqual(try writeStatus(a), .success)
        XCTAssertEqual(try a.admin.execute(SubmissionQueueEntry(opcode: 0x0A, commandID: 0, nsid: 1, cdw10: 0x83)).cqe.dw0, 1)
    }
}
