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
    /// Whether the kernel took SINGLE_ISSUER + DEFER_TASKRUN (else a plain ring).
    private(set) var deferredTaskRun = true

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
            deferredTaskRun = false
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

    /// What this kernel's io_uring offers and what Fathom uses of it, for the startup log.
    func features() -> String {
        var used = [deferredTaskRun ? "SINGLE_ISSUER+DEFER_TASKRUN" : "plain ring (no SINGLE_ISSUER/DEFER_TASKRUN)"]
        used.append("batched SENDMSG")
        var unused: [String] = []
        if let probe = io_uring_get_probe_ring(ring) {
            defer { io_uring_free_probe(probe) }
            // SEND_ZC and multishot recv both arrived in Linux 6.0; the probe lists opcodes only,
            // so the first stands for both.
            if io_uring_opcode_supported(probe, Int32(IORING_OP_SEND_ZC.rawValue)) != 0 {
                unused += ["SEND_ZC", "multishot recv with buffer rings"]
            }
        }
        return "uses " + used.joined(separator: ", ") + (unused.isEmpty ? "" : "; available, not used yet: " + unused.joined(separator: ", "))
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
