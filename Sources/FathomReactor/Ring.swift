import CLiburing
#if canImport(Glibc)
import Glibc
#endif

/// One io_uring, owned by one reactor thread. A thin typed layer over liburing: getting an
/// SQE never fails (a full submission queue is flushed first), and completions are
/// drained in batches.
final class Ring {
    private let ring: UnsafeMutablePointer<io_uring>
    let entries: UInt32

    /// Creates the ring on the calling thread. SINGLE_ISSUER and DEFER_TASKRUN (kernel ≥ 6.1)
    /// cut the kernel's locking and task-work overhead; older kernels get a plain ring.
    init(entries: UInt32) throws {
        ring = .allocate(capacity: 1)
        ring.initialize(to: io_uring())
        self.entries = entries
        var params = io_uring_params()
        params.flags = fathom_IORING_SETUP_SINGLE_ISSUER | fathom_IORING_SETUP_DEFER_TASKRUN
        params.cq_entries = entries * 4
        params.flags |= UInt32(IORING_SETUP_CQSIZE)
        var rc = io_uring_queue_init_params(entries, ring, &params)
        if rc < 0 {
            params = io_uring_params()
            params.cq_entries = entries * 4
            params.flags = UInt32(IORING_SETUP_CQSIZE)
            rc = io_uring_queue_init_params(entries, ring, &params)
        }
        guard rc >= 0 else {
            ring.deallocate()
            throw RingError(errno: -rc)
        }
    }

    deinit {
        io_uring_queue_exit(ring)
        ring.deallocate()
    }

    /// A zeroed SQE tagged with `userData`.
    @inline(__always)
    func sqe(_ userData: UInt64) -> UnsafeMutablePointer<io_uring_sqe> {
        var s = io_uring_get_sqe(ring)
        while s == nil {
            _ = io_uring_submit(ring)
            s = io_uring_get_sqe(ring)
        }
        io_uring_sqe_set_data64(s!, userData)
        return s!
    }

    /// Submits what is queued and waits for at least one completion.
    @inline(__always)
    func submitAndWait() -> Int32 { io_uring_submit_and_wait(ring, 1) }

    /// Hands each available completion to `body`, marking each seen before the call (the
    /// body may submit, and the kernel may then reuse the entry).
    @inline(__always)
    func drain(_ body: (UInt64, Int32) -> Void) {
        var cqe: UnsafeMutablePointer<io_uring_cqe>? = nil
        while io_uring_peek_cqe(ring, &cqe) == 0, let c = cqe {
            let userData = c.pointee.user_data
            let result = c.pointee.res
            io_uring_cqe_seen(ring, c)
            body(userData, result)
        }
    }
}

struct RingError: Error, CustomStringConvertible {
    var errno: Int32
    var description: String { "io_uring setup failed: \(String(cString: strerror(errno))) (errno \(errno))" }
}
