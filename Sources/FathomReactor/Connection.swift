import CLiburing
import FathomStorage
import FathomTarget
import Logging
import NVMeWire
#if canImport(Glibc)
import Glibc
#endif

/// One NVMe/TCP connection = one NVMe queue (admin or I/O), owned by one reactor for life.
///
/// The receive side is a state machine over a staging buffer (PDU headers, several per
/// recv) that switches to receiving payloads straight into command buffers; under command
/// traffic it parses the provided buffers of a multishot recv in place instead
/// (ConnectionMultishot.swift). The send side batches queued PDUs into one SENDMSG. Storage
/// I/O for the queue runs on the same ring.
final class Connection {
    enum State { case awaitingICReq, active, closing }
    enum ReceivePhase { case header, payload, dataDigest }
    enum PayloadKind { case capsule, h2cData }

    let fd: Int32
    /// What socket SQEs name: the registered-file slot (with IOSQE_FIXED_FILE) when the ring
    /// took the socket, else `fd`.
    private(set) var socketRef: Int32
    private(set) var socketFixed = false
    let index: Int
    let generation: UInt16
    /// The owning reactor outlives every connection it holds (it removes them before it
    /// stops), so the reference needs no runtime check on each of the many uses per command.
    unowned(unsafe) let reactor: Reactor
    let port: Port
    let peer: String
    let localAddress: String
    var state: State = .awaitingICReq
    var digests = DigestConfig(header: false, data: false)

    // Queue, set by Connect.
    var controller: Controller? {
        didSet { controllerRef = controller.map { Unmanaged.passUnretained($0) } }
    }
    /// `controller`, unretained: the per-command path reaches the controller several times
    /// (keep-alive, decoding, reservations, statistics), and each access through the optional
    /// var would retain and release it. `controller` keeps it alive while this is set.
    private(set) var controllerRef: Unmanaged<Controller>?
    /// Masked namespaces this queue's host was found to see (no NQN hashing per command).
    var visibility = VisibilityCache()
    /// The reactor's ring (its submission side) and buffer pool, reached without reference
    /// counting (the reactor outlives its connections): through `reactor`, or even through an
    /// `unowned(unsafe)` field, each use retains and releases the object, on every recv, send,
    /// storage operation and buffer.
    let submissions: Ring.Submissions
    private let poolRef: Unmanaged<BufferPool>
    /// The last clone namespace's backend for this connection's host (see `cloneBackend`).
    var cachedClone: (set: CloneSet, backend: BlockBackend)?
    var queueID: UInt16 = 0
    var queueSize = 0
    var sqHead: UInt16 = 0
    var sqFlowControlDisabled = false
    var slots = SlotTable()

    // Receive.
    static let stagingCapacity = 64 * 1024
    let staging: UnsafeMutableRawPointer
    /// Where the bytes being parsed are: `staging`, or a provided buffer of the multishot
    /// recv while it is parsed in place (never kept past that, see `consumeProvided`).
    var input: UnsafeMutableRawPointer
    var rxStart = 0
    var rxEnd = 0
    var phase = ReceivePhase.header
    var payloadDest: UnsafeMutableRawPointer? = nil
    var payloadRemaining = 0
    var payloadStart: UnsafeMutableRawPointer? = nil
    var payloadLength = 0
    var payloadSlot = 0
    var payloadKind = PayloadKind.capsule
    var recvInFlight = false
    var recvDirect = false
    /// The multishot recv's buffers (nil: single recvs, see `ReceiveMode`), the sequence number
    /// in the user data of the one armed last (to cancel exactly that one) and whether a
    /// cancel is out.
    var receiveRing: ReceiveBufferRing?
    var multishotSequence = 0
    var cancelPending = false
    /// Command capsules received in a row without a data payload (saturating): the multishot
    /// recv is armed only from `quietCapsulesForMultishot` on (see `noteDataTraffic`).
    var quietCapsules = Connection.quietCapsulesForMultishot
    /// No more PDUs are read (fatal error, disconnect, shutdown).
    var stopReading = false

    // Send.
    var sendQueue: [Int32] = []
    var sendHead = 0
    var batch: [Int32] = []
    static let iovCapacity = 256
    let iov: UnsafeMutablePointer<iovec>
    var iovStart = 0
    var iovCount = 0
    let msg: UnsafeMutablePointer<msghdr>
    var sendInFlight = false
    /// Registered with the reactor for a flush at the end of this loop iteration.
    var flushScheduled = false
    var closeAfterSend = false
    /// Zero-copy sends (ConnectionZeroCopy.swift): whether this connection still tries them,
    /// whether the send in flight is one, and the batches whose memory the kernel may still read.
    var zeroCopyAllowed = false
    var sendIsZeroCopy = false
    var zeroCopySequence: UInt16 = 0
    var zeroCopyBatches: [ZeroCopyBatch] = []
    var zeroCopyBatchesHead = 0
    var zeroCopyHeld: [Int32] = []
    var zeroCopyHeldHead = 0
    /// ICResp and C2HTermReq (at most one of each, ever).
    let control: UnsafeMutableRawPointer
    var controlLength = 0

    /// Command IDs outstanding on this queue, one bit each: a host reusing one before its
    /// completion gets Command ID Conflict instead of two commands the host cannot tell apart.
    let activeCIDs = UnsafeMutablePointer<UInt64>.allocate(capacity: 1024)

    /// A fused Compare waiting for its Write (the next command on this queue), or -1.
    var pendingFusedFirst = -1
    /// Commands waiting for a closed write gate to open.
    var deferred: [Int] = []

    /// SQEs in the kernel that reference this connection's memory.
    var inflight = 0
    var closeReason = ""
    let createdAtMs = MonotonicClock.nowMs()
    /// When a PDU header or payload last finished arriving (see `pduOverdue`).
    var lastPDUProgressMs = MonotonicClock.nowMs()

    static let controlItem: Int32 = -1
    static let r2tFlag: Int32 = 1 << 30

    init(fd: Int32, index: Int, generation: UInt16, reactor: Reactor, port: Port, peer: String, localAddress: String) {
        self.fd = fd
        socketRef = fd
        self.index = index
        self.generation = generation
        self.reactor = reactor
        submissions = reactor.ring.submissions
        poolRef = Unmanaged.passUnretained(reactor.pool)
        self.port = port
        self.peer = peer
        self.localAddress = localAddress
        staging = .allocate(byteCount: Self.stagingCapacity, alignment: 64)
        input = staging
        iov = .allocate(capacity: Self.iovCapacity)
        msg = .allocate(capacity: 1)
        msg.initialize(to: msghdr())
        control = .allocate(byteCount: 256, alignment: 64)
        activeCIDs.initialize(repeating: 0, count: 1024)
        sendQueue.reserveCapacity(64)
        batch.reserveCapacity(64)
        // Room for Connect before the queue size is known.
        slots.grow(to: SlotTable.chunkSize)
    }

    deinit {
        staging.deallocate()
        iov.deallocate()
        msg.deallocate()
        control.deallocate()
        activeCIDs.deallocate()
        slots.deallocate()
    }

    var logger: Logger { reactor.logger }
    var isAdminQueue: Bool { queueID == 0 }
    var ioInCapsuleLimit: Int { controller == nil || isAdminQueue ? TargetSettings.adminInCapsuleDataSize : controller!.ioInCapsuleDataSize }

    @inline(__always)
    func userData(_ kind: UserData.Kind, slot: Int = 0) -> UInt64 {
        UserData(kind, connection: index, generation: generation, slot: slot).raw
    }

    func start() {
        if reactor.ring.setFixedFile(index, fd) {
            socketRef = Int32(index)
            socketFixed = true
        }
        zeroCopyAllowed = reactor.settings.zeroCopySend != .never && reactor.ring.supportsSendZeroCopy
        setUpReceiveRing()
        postRecv()
    }

    /// Marks a prepared socket SQE as naming a registered file (the prep helpers clear flags).
    @inline(__always)
    func markSocket(_ sqe: UnsafeMutablePointer<io_uring_sqe>) {
        if socketFixed { fathom_sqe_set_flags(sqe, fathom_IOSQE_FIXED_FILE) }
    }

    // MARK: Teardown

    /// Ends the connection: no new I/O is issued, the socket is shut down so pending socket
    /// operations complete, and resources go once the kernel holds no reference to them.
    func close(_ reason: String) {
        guard state != .closing else { return }
        state = .closing
        stopReading = true
        closeReason = reason
        shutdown(fd, Int32(SHUT_RDWR))
        finishIfIdle()
    }

    func finishIfIdle() {
        guard state == .closing, inflight == 0 else { return }
        for i in 0..<slots.count where slots[i].pointee.state != .free { releaseSlot(i) }
        // The registered table holds its own reference to the socket: empty the slot, or the
        // socket would outlive the close.
        if socketFixed {
            _ = reactor.ring.setFixedFile(index, -1)
            socketFixed = false
        }
        if let r = receiveRing {
            r.release(ring: reactor.ring)
            receiveRing = nil
        }
        Glibc.close(fd)
        if let ctrl = controller {
            if isAdminQueue {
                ctrl.setEventRoute(nil)
                reactor.target.remove(ctrl)
                logger.info("controller \(ctrl.id) removed", metadata: ["host": "\(ctrl.hostNQN)", "reason": "\(closeReason)"])
            } else {
                reactor.target.releaseQueue(queueID, of: ctrl)
            }
        }
        logger.info("connection closed", metadata: ["peer": "\(peer)", "qid": "\(controller == nil ? "-" : String(queueID))",
                                                     "cntlid": "\(controller.map { String($0.id) } ?? "-")", "reason": "\(closeReason)"])
        controller = nil
        reactor.removeConnection(self)
    }

    /// Sends a C2HTermReq for a fatal transport error, then closes.
    func fatal(_ fault: TransportFault, header: UnsafeRawPointer?, headerLength: Int) {
        guard !stopReading else { return }
        logger.warning("fatal transport error, closing", metadata: ["peer": "\(peer)", "error": "\(fault)"])
        stopReading = true
        let error = UnsafeRawBufferPointer(start: header, count: header == nil ? 0 : headerLength)
        controlLength = TerminationRequest(status: fault.status.rawValue, errorInformation: fault.fieldOffset)
            .encode(type: .c2hTermReq, into: control, errorData: error)
        closeReason = "transport error: \(fault.reason)"
        closeAfterSend = true
        enqueue(Self.controlItem)
    }

    /// Runs `body` with the queue's controller borrowed, without retaining it; nil before Connect.
    @inline(__always)
    func withController<R>(_ body: (Controller) -> R) -> R? {
        guard let ref = controllerRef else { return nil }
        return ref._withUnsafeGuaranteedRef(body)
    }

    /// Runs `body` with the reactor's buffer pool borrowed, without retaining it.
    @inline(__always)
    func withPool<R>(_ body: (BufferPool) -> R) -> R { poolRef._withUnsafeGuaranteedRef(body) }

    // MARK: Slots

    func releaseSlot(_ i: Int) {
        let s = slots[i]
        releaseGate(i)
        if let b = s.pointee.buffer {
            let buffer = BufferPool.Buffer(pointer: b, fixedIndex: s.pointee.bufferFixed), cls = s.pointee.bufferClass
            withPool { $0.give(buffer, sizeClass: cls) }
            s.pointee.buffer = nil
        }
        if let a = s.pointee.aux {
            let buffer = BufferPool.Buffer(pointer: a, fixedIndex: s.pointee.auxFixed), cls = s.pointee.auxClass
            withPool { $0.give(buffer, sizeClass: cls) }
            s.pointee.aux = nil
        }
        // Field by field: assigning a fresh CommandSlot costs a full value-witness copy.
        s.pointee.state = .free
        s.pointee.data = nil
        s.pointee.dataLength = 0
        s.pointee.inCapsuleLength = 0
        s.pointee.received = 0
        s.pointee.namespace = nil
        s.pointee.storage = nil
        s.pointee.c2hLength = 0
        s.pointee.skipResponse = false
        s.pointee.fuseRole = 0
        s.pointee.fusePartner = -1
        s.pointee.fuseDataReady = false
        s.pointee.fuseFailure = nil
        s.pointee.cidTracked = false
        slots.give(i)
    }

    /// Gives the slot a data buffer of `length` bytes.
    @inline(__always)
    func attachBuffer(_ i: Int, length: Int) {
        let s = slots[i]
        if s.pointee.buffer == nil {
            let (b, cls) = withPool { $0.take(length) }
            s.pointee.buffer = b.pointer
            s.pointee.bufferFixed = b.fixedIndex
            s.pointee.bufferClass = cls
        }
        s.pointee.data = s.pointee.buffer
        s.pointee.dataLength = length
    }
}
