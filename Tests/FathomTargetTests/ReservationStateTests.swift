import Dispatch
@testable import FathomTarget
import Foundation
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Persist Through Power Loss writes the reservation state to a file with `fsync` before the
/// command completes. That save must not hold the lock every reactor's I/O path takes while a
/// namespace has registrants: a slow disk would stall every host's I/O to the namespace.
final class ReservationStateTests: XCTestCase {
    let a = HostIdentifier([0xA])
    let b = HostIdentifier([0xB])

    func testASlowSaveHoldsUpNoConflictCheck() throws {
        var template = Array("/tmp/fathom-resv-XXXXXX".utf8CString)
        let dir = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/reservations"
        let state = ReservationState(persistencePath: path)
        let registered = state.update { s in
            s.registrants.append(.init(host: a, key: 1, controllerID: 1))
            s.persistThroughPowerLoss = true
            return (.success, [])
        }
        XCTAssertEqual(registered.0, .success)
        XCTAssertTrue(state.isEngaged)

        // The next save blocks in open() of its temporary file, a FIFO with no reader yet.
        XCTAssertEqual(mkfifo(path + ".tmp", 0o600), 0)
        let acquired = DispatchSemaphore(value: 0)
        let result = ManagedStatus()
        DispatchQueue.global().async {
            result.value = self.state(state, acquireFor: self.a)
            acquired.signal()
        }
        usleep(200_000)  // the update is now inside its save (nothing else can make it finish)
        XCTAssertEqual(acquired.wait(timeout: .now()), .timedOut, "the save is still waiting")
        // I/O checks go on meanwhile, against the state as it was: nothing held yet.
        let checked = DispatchSemaphore(value: 0)
        let conflict = ManagedStatus()
        DispatchQueue.global().async {
            conflict.value = state.conflict(host: self.b, write: true)
            checked.signal()
        }
        XCTAssertEqual(checked.wait(timeout: .now() + 5), .success, "a conflict check waited for the save")
        XCTAssertNil(conflict.value)

        // A reader lets the save go on; fsync of a FIFO fails, so the update fails and the state
        // stays as it was.
        let reader = open(path + ".tmp", O_RDONLY)
        XCTAssertGreaterThanOrEqual(reader, 0)
        XCTAssertEqual(acquired.wait(timeout: .now() + 5), .success)
        var sink = [UInt8](repeating: 0, count: 4096)
        _ = read(reader, &sink, sink.count)
        close(reader)
        XCTAssertEqual(result.value, .internalError)
        XCTAssertNil(state.conflict(host: b, write: true), "a failed save installs nothing")

        unlink(path + ".tmp")
        XCTAssertEqual(self.state(state, acquireFor: a), .success)
        XCTAssertEqual(state.conflict(host: b, write: true), .reservationConflict)
        XCTAssertNotNil(ReservationState.load(path)?.type, "the acquire reached the file")
    }

    private func state(_ s: ReservationState, acquireFor host: HostIdentifier) -> NVMeStatus {
        s.update { st in
            st.type = .writeExclusive
            st.holder = host
            return (.success, [])
        }.0
    }
}

/// A status written on one thread and read on another after a semaphore (which orders them).
private final class ManagedStatus: @unchecked Sendable {
    var value: NVMeStatus?
}
