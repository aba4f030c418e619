import CLiburing
import FathomTarget
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
    /// Slots of the ring's registered-file table (0 when the kernel refused one). A socket in
    /// the table is named by its slot with IOSQE_FIXED_FILE, which spares the kernel looking
    /// the descriptor up and taking and dropping a reference on every recv and send (atomic
    /// operations on a file shared by the process's threads).
    private(set) var fixedFileSlots: Int = 0

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
        // The ring's own descriptor registered with the kernel (5.18+): each io_uring_enter
        // then skips looking the descriptor up and taking a reference on it, which a
        // multi-threaded process (reactors, storage workers) otherwise pays on every wait.
        // Only this thread may use the registration, and only this thread enters the ring.
        registeredRingDescriptor = io_uring_register_ring_fd(ring) == 1
        if io_uring_register_files_sparse(ring, UInt32(Self.fixedFileTableSize)) == 0 {
            fixedFileSlots = Self.fixedFileTableSize
        }
        if io_uring_register_buffers_sparse(ring, UInt32(Self.fixedBufferTableSize)) == 0 {
            fixedBufferSlots = Self.fixedBufferTableSize
        }
    }

    static let fixedFileTableSize = 4096
    private(set) var registeredRingDescriptor = false

    /// Registered-buffer table (sparse, filled a slab at a time by the buffer pool): storage
    /// reads and writes of pool buffers then go as READ_FIXED / WRITE_FIXED, and the kernel
    /// skips pinning the buffer's pages for every O_DIRECT I/O.
    static let fixedBufferTableSize = 1024
    private(set) var fixedBufferSlots = 0
    private var fixedBuffersUsed = 0

    /// Registers `length` bytes at `base` as the next fixed buffer. Returns its index, or -1
    /// (table full, or refused: e.g. over RLIMIT_MEMLOCK for a user without CAP_IPC_LOCK).
    func registerBuffer(_ base: UnsafeMutableRawPointer, _ length: Int) -> Int32 {
        guard fixedBuffersUsed < fixedBufferSlots else { return -1 }
        var iov = iovec(iov_base: base, iov_len: length)
        var tag: UInt64 = 0
        guard io_uring_register_buffers_update_tag(ring, UInt32(fixedBuffersUsed), &iov, &tag, 1) == 1 else { return -1 }
        fixedBuffersUsed += 1
        return Int32(fixedBuffersUsed - 1)
    }

    /// Puts `fd` into registered-file slot `slot` (or empties the slot with -1). Returns
    /// false when the slot cannot be used; the caller then names the plain descriptor.
    func setFixedFile(_ slot: Int, _ fd: Int32) -> Bool {
        guard slot < fixedFileSlots else { return false }
        var f = fd
        return io_uring_register_files_update(ring, UInt32(slot), &f, 1) == 1
    }

    /// Whether this kernel has SENDMSG_ZC (Linux 6.1; the usage report Fathom relies on to
    /// stop when the kernel copies anyway came in 6.2, and older kernels reject the flag).
    /// Cleared when the kernel turns the usage report down (`Connection.zeroCopyRefused`).
    lazy var supportsSendZeroCopy: Bool = {
        guard let probe = io_uring_get_probe_ring(ring) else { return false }
        defer { io_uring_free_probe(probe) }
        return io_uring_opcode_supported(probe, Int32(IORING_OP_SENDMSG_ZC.rawValue)) != 0
    }()

    /// Whether this kernel takes provided-buffer rings (Linux 5.19), tried once with a
    /// one-entry ring registered and removed again. Multishot recv itself (6.0) has no probe:
    /// a kernel without it fails the first one with EINVAL, and `multishotReceiveRefused` is set.
    lazy var supportsBufferRings: Bool = {
        let entries = UnsafeMutableRawPointer.allocate(byteCount: 4096, alignment: 4096)
        defer { entries.deallocate() }
        guard registerBufferRing(entries, count: 1, group: Self.probeBufferGroup) == 0 else { return false }
        unregisterBufferRing(group: Self.probeBufferGroup)
        return true
    }()
    static let probeBufferGroup: UInt16 = 0xFFFF
    /// The kernel refused a multishot recv (older than 6.0): later connections use plain recv.
    var multishotReceiveRefused = false

    /// Tests only: bits added to every multishot recv's flags (the SQE's `ioprio`). A bit the
    /// kernel does not know makes it fail the recv with EINVAL, exactly as a 5.19 kernel (buffer
    /// rings, no multishot recv) fails IORING_RECV_MULTISHOT, so the fallback runs here too.
    nonisolated(unsafe) static var extraMultishotRecvFlagsForTests: UInt16 = 0

    /// Registers a provided-buffer ring of `count` entries (a power of two, in page-aligned
    /// `entries`) as buffer group `group`. Returns 0 or a negative errno.
    func registerBufferRing(_ entries: UnsafeMutableRawPointer, count: Int, group: UInt16) -> Int32 {
        fathom_register_buf_ring(ring, entries, UInt32(count), group)
    }

    func unregisterBufferRing(group: UInt16) {
        _ = io_uring_unregister_buf_ring(ring, Int32(group))
    }

    /// What this kernel's io_uring offers and what Fathom uses of it, for the startup log.
    func features(zeroCopySend: ZeroCopySendPolicy, receive: ReceiveMode) -> String {
        var used = [deferredTaskRun ? "SINGLE_ISSUER+DEFER_TASKRUN" : "plain ring (no SINGLE_ISSUER/DEFER_TASKRUN)"]
        used.append(fixedFileSlots > 0 ? "registered socket files (\(fixedFileSlots) slots)" : "plain socket descriptors (no registered files)")
        used.append(registeredRingDescriptor ? "registered ring descriptor" : "plain ring descriptor (no registered ring fd)")
        used.append(fixedBufferSlots > 0 ? "registered buffers for storage I/O of pool buffers" : "plain buffers (no registered buffers)")
        var unused: [String] = []
        if supportsBufferRings {
            let rings = "multishot recv with per-connection buffer rings (\(ReceiveBufferRing.bufferCount) × \(ReceiveBufferRing.bufferSize / 1024) KiB)"
            if receive == .multishot { used.append(rings) } else { unused.append(rings + " (--recv single)") }
        } else {
            used.append("one recv per read (no provided-buffer rings)")
        }
        used.append("batched SENDMSG")
        if supportsSendZeroCopy {
            switch zeroCopySend {
            case .never: unused.append("SENDMSG_ZC (--send-zc never)")
            case .auto: used.append("SENDMSG_ZC for large reads while the kernel does not copy")
            case .always: used.append("SENDMSG_ZC for large reads (always)")
            }
        }
        return "uses " + used.joined(separator: ", ") + (unused.isEmpty ? "" : "; available, not used: " + unused.joined(separator: ", "))
    }

    deinit {
        io_uring_queue_exit(ring)
        ring.deallocate()
    }

    /// A zeroed SQE tagged with `userData`.
    @inline(__always)
    func sqe(_ userData: UInt64) -> UnsafeMutablePointer<io_uring_sqe> { submissions.sqe(userData) }

    /// The ring's submission side as a plain value, for connections: taking an SQE through
    /// it retains nothing, where a call on the Ring object retains and releases the object
    /// around every recv, send and storage operation.
    var submissions: Submissions { Submissions(ring: ring) }

    struct Submissions {
        fileprivate let ring: UnsafeMutablePointer<io_uring>

        /// A fresh SQE tagged with `userData`; submits what is queued when the queue is full.
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
    }

    /// Submits what is queued and waits for at least one completion.
    @inline(__always)
    func submitAndWait() -> Int32 { io_uring_submit_and_wait(ring, 1) }

    /// Submits what is queued and makes completions visible without sleeping (with
    /// DEFER_TASKRUN they are only posted when the task enters the kernel asking for events).
    /// True when at least one completion is ready.
    @inline(__always)
    func submitAndPeek() -> Bool {
        _ = io_uring_submit_and_get_events(ring)
        return io_uring_cq_ready(ring) > 0
    }

    /// Hands each available completion (user data, result, CQE flags) to `body`, marking each seen before the call (the
    /// body may submit, and the kernel may then reuse the entry).
    @inline(__always)
    func drain(_ body: (UInt64, Int32, UInt32) -> Void) {
        var cqe: UnsafeMutablePointer<io_uring_cqe>? = nil
        while io_uring_peek_cqe(ring, &cqe) == 0, let c = cqe {
            let userData = c.pointee.user_data
            let result = c.pointee.res
            let flags = c.pointee.flags
            io_uring_cqe_seen(ring, c)
            body(userData, result, flags)
        }
    }
}

struct RingError: Error, CustomStringConvertible {
    var errno: Int32
    var description: String { "io_uring setup failed: \(String(cString: strerror(errno))) (errno \(errno))" }
}
