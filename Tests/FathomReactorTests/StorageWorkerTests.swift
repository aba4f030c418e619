import CLiburing
import CNVMeTypes
import Dispatch
import FathomReactor
import FathomStorage
import NVMeInitiator
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// A memory namespace whose writes and flushes go to a storage worker and wait there until
/// the test opens the gate: a stand-in for a clone's copy-up or `fdatasync` on a slow disk.
final class GatedBackend: WrappedMemoryBackend {
    let gate = DispatchSemaphore(value: 0)
    /// Signalled as each operation reaches its worker.
    let entered = DispatchSemaphore(value: 0)
    override func prepare(_ operation: StorageOperation, sqe: () -> UnsafeMutablePointer<io_uring_sqe>) -> Int32? {
        switch operation {
        case .write, .flush: return StorageOperation.runsOnWorker
        default: return inner.prepare(operation, sqe: sqe)
        }
    }
    override func perform(_ operation: StorageOperation) -> Int32 {
        entered.signal()
        gate.wait()
        return inner.prepare(operation, sqe: { fatalError("memory completes inline") })!
    }
}

/// Operations that may block run on storage workers: while one waits there, the reactor —
/// one reactor here, shared by both hosts — keeps serving everything else, and the waiting
/// command completes with its result once the operation ends, or is dropped cleanly when its
/// connection went away meanwhile.
final class StorageWorkerTests: XCTestCase {
    let nqn = "nqn.2026-11.io.fathom.test:workers"
    var server: FathomServer!
    var gated: GatedBackend!
    /// nsid 2: its writes go to a worker too, through a gate left open.
    var open: GatedBackend!

    override func setUpWithError() throws {
        gated = try GatedBackend(bytes: 8 << 20)
        open = try GatedBackend(bytes: 8 << 20)
        for _ in 0..<1000 { open.gate.signal() }
        server = try startServer(nqn: nqn, nsid1: gated, nsid2: open)
    }

    override func tearDown() {
        for _ in 0..<64 { gated.gate.signal() }  // nothing may stay parked on a worker
        server.stop()
    }

    private func connect() throws -> HostController {
        let c = try HostController(host: "127.0.0.1", port: server.boundPorts[0], subsystemNQN: nqn)
        try c.enable()
        try c.createIOQueues(1)
        return c
    }

    func testAWaitingOperationStallsNothingElseOnItsReactor() throws {
        let a = try connect(), b = try connect()
        let data = pattern(4096, seed: 1)
        let q = a.ioQueues[0]
        let write = try q.submit(HostController.writeCommand(nsid: 1, lba: 8, blocks: 8), write: data)
        XCTAssertEqual(gated.entered.wait(timeout: .now() + 5), .success, "the write reached a worker")
        // While it waits: the other host, the same namespace's reads, the other namespace and
        // A's own other queue (admin) are all served by the one reactor.
        try b.write(nsid: 2, lba: 0, data: pattern(8192, seed: 2))
        XCTAssertEqual(try b.read(nsid: 2, lba: 0, blocks: 16), pattern(8192, seed: 2))
        XCTAssertEqual(try b.read(nsid: 1, lba: 8, blocks: 8), [UInt8](repeating: 0, count: 4096), "not written yet")
        XCTAssertEqual(try a.identify(cns: 0, nsid: 1).count, 4096)
        gated.gate.signal()
        XCTAssertTrue(try q.wait(write).status.isSuccess)
        XCTAssertEqual(try b.read(nsid: 1, lba: 8, blocks: 8), data)
        // A flush waits the same way and completes the same way.
        let flush = try q.submit(SubmissionQueueEntry(opcode: UInt8(nvme_cmd_flush.rawValue), commandID: 0, nsid: 1))
        XCTAssertEqual(gated.entered.wait(timeout: .now() + 5), .success)
        XCTAssertEqual(try b.read(nsid: 2, lba: 0, blocks: 16), pattern(8192, seed: 2))
        gated.gate.signal()
        XCTAssertTrue(try q.wait(flush).status.isSuccess)
    }

    /// A backend's operations run one at a time, in order, on one worker: eight writes waiting
    /// on one namespace occupy one thread, and another namespace's writes (also on workers)
    /// go through meanwhile. With one queue for all, the pool's four threads would all be
    /// waiting on the first namespace and the second's write behind them.
    func testOneBackendsQueuedOperationsHoldUpNoOtherBackend() throws {
        let a = try connect(), b = try connect()
        let q = a.ioQueues[0]
        let writes = try (0..<8).map { k in
            try q.submit(HostController.writeCommand(nsid: 1, lba: UInt64(8 * k), blocks: 8), write: pattern(4096, seed: UInt64(k)))
        }
        XCTAssertEqual(gated.entered.wait(timeout: .now() + 5), .success)
        try b.write(nsid: 2, lba: 0, data: pattern(4096, seed: 99))  // through a worker, while eight wait
        XCTAssertEqual(try b.read(nsid: 2, lba: 0, blocks: 8), pattern(4096, seed: 99))
        XCTAssertEqual(gated.entered.wait(timeout: .now() + 0.2), .timedOut, "one operation of a backend at a time")
        for k in 0..<8 {
            gated.gate.signal()
            XCTAssertTrue(try q.wait(writes[k]).status.isSuccess, "write \(k)")
            if k < 7 { XCTAssertEqual(gated.entered.wait(timeout: .now() + 5), .success, "write \(k + 1) started") }
        }
        for k in 0..<8 { XCTAssertEqual(try b.read(nsid: 1, lba: UInt64(8 * k), blocks: 8), pattern(4096, seed: UInt64(k))) }
    }

    func testAConnectionClosedWhileItsOperationWaitsIsDroppedCleanly() throws {
        var a: HostController? = try connect()
        let b = try connect()
        try a!.ioQueues[0].submit(HostController.writeCommand(nsid: 1, lba: 0, blocks: 8), write: pattern(4096, seed: 3))
        XCTAssertEqual(gated.entered.wait(timeout: .now() + 5), .success)
        a = nil  // the host goes away with its write on a worker
        XCTAssertEqual(try b.read(nsid: 2, lba: 0, blocks: 8).count, 4096)
        gated.gate.signal()
        // The late result finds its connection closing: the slot is released, nothing is sent,
        // and the target goes on (the write itself was done: it reached the backend).
        XCTAssertTrue(eventually { (try? b.read(nsid: 1, lba: 0, blocks: 8)) == pattern(4096, seed: 3) })
        XCTAssertTrue(eventually { server.target.liveControllers.count == 1 }, "A's controller is torn down")
        let c = try connect()
        gated.gate.signal()  // let the next one through at once
        try c.write(nsid: 1, lba: 16, data: pattern(512, seed: 4))
        XCTAssertEqual(gated.entered.wait(timeout: .now() + 5), .success, "it went through a worker too")
    }
}
