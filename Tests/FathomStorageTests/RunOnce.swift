import CLiburing
import FathomStorage
import XCTest

/// Runs one backend operation to its end as the engine would: on a ring of its own when the
/// backend prepares an SQE, inline when it completes at once, through `perform` (here, on the
/// test's thread) when it asks for a storage worker. A short Read or Write is continued for
/// the rest, as the engine does; the result is the first error or the whole length.
func runOnce(_ backend: BlockBackend, _ operation: StorageOperation) -> Int32 {
    var ring = io_uring()
    XCTAssertEqual(io_uring_queue_init(8, &ring, 0), 0)
    defer { io_uring_queue_exit(&ring) }
    func step(_ op: StorageOperation) -> Int32 {
        guard let inline = backend.prepare(op, sqe: { io_uring_get_sqe(&ring)! }) else {
            io_uring_submit(&ring)
            var cqe: UnsafeMutablePointer<io_uring_cqe>? = nil
            XCTAssertEqual(io_uring_wait_cqe(&ring, &cqe), 0)
            let res = cqe!.pointee.res
            io_uring_cqe_seen(&ring, cqe)
            return res
        }
        return inline == StorageOperation.runsOnWorker ? backend.perform(op) : inline
    }
    switch operation {
    case let .read(buffer, length, offset):
        var done = 0
        while done < length {
            let r = step(.read(buffer: buffer + done, length: length - done, offset: offset + UInt64(done)))
            guard r > 0 else { return r }
            done += Int(r)
        }
        return Int32(length)
    case let .write(buffer, length, offset, fua):
        var done = 0
        while done < length {
            let r = step(.write(buffer: buffer + done, length: length - done, offset: offset + UInt64(done), forceUnitAccess: fua))
            guard r > 0 else { return r }
            done += Int(r)
        }
        return Int32(length)
    default:
        return step(operation)
    }
}
