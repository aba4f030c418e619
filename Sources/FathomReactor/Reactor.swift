import CLiburing
import FathomTarget
import Logging
import NVMeWire
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A reactor thread: one io_uring driving its connections' sockets and storage I/O, its
/// buffer pool and its 1 s tick (keep-alive, teardown of dead controllers, shutdown).
/// Other threads reach it only through `inbox` + its eventfd.
final class Reactor {
    let id: Int
    let target: Target
    let settings: TargetSettings
    var logger: Logger
    private(set) var ring: Ring!
    private(set) var pool: BufferPool!
    private var connections: [Connection?] = []
    /// Connections with PDUs queued during this loop iteration.
    private var toFlush: [Connection] = []
    private var freeIndices: [Int] = []
    private var generations: [UInt16] = []
    var nowMs: Int64 = MonotonicClock.nowMs()

    /// Accepted sockets handed over by the accepting reactor.
    private let inbox = Mutex<[IncomingConnection]>([])
    /// Work from other threads (asynchronous events), run on this reactor's thread.
    private let tasks = Mutex<[() -> Void]>([])
    /// Results of storage operations run by `StorageWorkers` (user data, result), delivered as
    /// the ring's completions are; swapped with `workerResultsTaken` so neither side allocates
    /// once both arrays have grown to the load.
    private let workerResults = Mutex<[(UInt64, Int32)]>([])
    private var workerResultsTaken: [(UInt64, Int32)] = []
    let wakeFD: Int32
    private let wakeBuffer = UnsafeMutablePointer<UInt64>.allocate(capacity: 1)
    private let tickSpec = UnsafeMutablePointer<__kernel_timespec>.allocate(capacity: 1)
    private let stopRequested = Atomic<Bool>(false)
    private var stopping = false
    private var stopDeadlineMs: Int64 = 0

    /// Listening sockets this reactor accepts on (reactor 0 only), with what each serves.
    var listeners: [Listener] = []
    weak var server: FathomServer?

    struct IncomingConnection {
        var fd: Int32
        var port: Port
        var peer: String
        var local: String
    }

    init(id: Int, target: Target, logger: Logger) {
        self.id = id
        self.target = target
        self.settings = target.settings
        self.logger = logger
        self.logger[metadataKey: "reactor"] = "\(id)"
        wakeFD = eventfd(0, Int32(EFD_CLOEXEC))
        tickSpec.pointee = __kernel_timespec(tv_sec: 1, tv_nsec: 0)
    }

    deinit {
        Glibc.close(wakeFD)
        wakeBuffer.deallocate()
        tickSpec.deallocate()
    }

    /// Hands an accepted connection to this reactor from any thread.
    func adopt(_ c: IncomingConnection) {
        inbox.withLock { $0.append(c) }
        wake()
    }

    /// Runs `work` on this reactor's thread, soon. Callable from any thread.
    func post(_ work: @escaping () -> Void) {
        tasks.withLock { $0.append(work) }
        wake()
    }

    /// A storage worker finished an operation of one of this reactor's connections (any thread).
    func storageWorkerFinished(userData: UInt64, result: Int32) {
        workerResults.withLock { $0.append((userData, result)) }
        wake()
    }

    func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    func requestStop() {
        stopRequested.store(true, ordering: .releasing)
        wake()
    }

    // MARK: Loop

    /// CPU this reactor's thread is pinned to, if any.
    var cpu: Int?
    /// Called on the reactor's thread once its ring exists and its first operations are armed.
    var onReady: (() -> Void)?

    /// Runs on the reactor's own thread until stopped.
    func run() throws {
        _ = fathom_name_current_thread("reactor-\(id)")  // as top -H and perf show it
        if let cpu { try Self.pinCurrentThread(to: cpu) }
        ring = try Ring(entries: 1024)
        if id == 0 { logger.info("io_uring: \(ring.features(zeroCopySend: settings.zeroCopySend, receive: settings.receiveMode))") }
        if id == 0 && settings.busyPollMicroseconds > 0 {
            logger.info("reactors poll up to \(settings.busyPollMicroseconds) µs for more work before sleeping (--busy-poll-us)")
        }
        pool = BufferPool(maxBytes: settings.maxDataTransfer)
        let ring = self.ring!
        pool.registerSlab = { base, length in ring.registerBuffer(base, length) }
        pool.slabAdded = { [unowned self] bytes in self.server?.countBufferPoolBytes(bytes) }
        armWake()
        armTick()
        for l in listeners { armAccept(l) }
        onReady?()
        let pollNs = UInt64(settings.busyPollMicroseconds) * 1000
        while true {
            if pollNs > 0 { poll(ring, forNanoseconds: pollNs) }
            let rc = ring.submitAndWait()
            if rc < 0 && rc != -EINTR && rc != -ETIME && rc != -EAGAIN && rc != -EBUSY {
                logger.critical("io_uring wait failed", metadata: ["errno": "\(-rc)"])
            }
            nowMs = MonotonicClock.nowMs()
            ring.drain { raw, result, flags in self.dispatch(raw, result, flags) }
            flushScheduled()
            if stopping && connections.allSatisfy({ $0 == nil }) { break }
        }
        logger.debug("reactor stopped")
    }

    /// Polls the ring for up to `budget` ns before the loop sleeps (`--busy-poll-us`); returns
    /// as soon as a completion is ready, so the wait that follows does not sleep.
    private func poll(_ ring: Ring, forNanoseconds budget: UInt64) {
        let start = MonotonicClock.nowNs()
        while !ring.submitAndPeek() {
            if MonotonicClock.nowNs() &- start >= budget { return }
        }
    }

    @inline(__always)
    private func dispatch(_ raw: UInt64, _ result: Int32, _ flags: UInt32) {
        guard let ud = UserData(raw) else { return }
        switch ud.kind {
        case .recv, .send, .storage:
            guard ud.connection < connections.count, let c = connections[ud.connection], c.generation == ud.generation else { return }
            switch ud.kind {
            case .recv: c.recvCompleted(result, flags: flags, tag: ud.slot)
            case .send:
                if flags & fathom_IORING_CQE_F_NOTIF != 0 {
                    c.zeroCopyNotified(sequence: ud.slot, result)
                } else {
                    c.sendCompleted(result, moreComing: flags & fathom_IORING_CQE_F_MORE != 0)
                }
            default: c.storageCompleted(ud.slot, result)
            }
        case .accept:
            accepted(listenerIndex: ud.slot, result)
        case .wake:
            workerResults.withLock { swap(&$0, &workerResultsTaken) }
            for (raw, result) in workerResultsTaken { dispatch(raw, result, 0) }
            workerResultsTaken.removeAll(keepingCapacity: true)
            drainInbox()
            for work in tasks.withLock({ list -> [() -> Void] in
                let items = list
                list.removeAll()
                return items
            }) { work() }
            if stopRequested.load(ordering: .acquiring) && !stopping { beginStop() }
            armWake()
        case .tick:
            tick()
            armTick()
        }
    }

    private func armWake() {
        let sqe = ring.sqe(UserData(.wake).raw)
        io_uring_prep_read(sqe, wakeFD, wakeBuffer, 8, 0)
    }

    private func armTick() {
        let sqe = ring.sqe(UserData(.tick).raw)
        io_uring_prep_timeout(sqe, tickSpec, 0, 0)
    }

    private func armAccept(_ l: Listener) {
        guard !stopping, listeners.contains(where: { $0 === l }) else { return }
        let sqe = ring.sqe(UserData(.accept, slot: l.token).raw)
        io_uring_prep_accept(sqe, l.fd, nil, nil, Int32(SOCK_CLOEXEC.rawValue))
    }

    /// Installs the listener set of a new configuration (reactor 0's thread): new sockets
    /// start accepting, sockets no longer configured are closed (their pending accept
    /// completes and finds no listener). Ports kept keep their socket and their connections.
    func replaceListeners(_ next: [(Listener, Port)]) {
        let old = listeners
        for (l, port) in next { l.port = port }
        listeners = next.map(\.0)
        for l in old where !listeners.contains(where: { $0 === l }) { l.close() }
        guard ring != nil else { return }  // not running yet: `run` arms them
        for l in listeners where !old.contains(where: { $0 === l }) { armAccept(l) }
    }

    private func accepted(listenerIndex token: Int, _ result: Int32) {
        guard let l = listeners.first(where: { $0.token == token }) else {
            if result >= 0 { Glibc.close(result) }
            return
        }
        if stopping {
            if result >= 0 { Glibc.close(result) }
            return
        }
        if result >= 0, let server, !server.admitConnection() {
            logger.warning("connection refused: the limit of \(settings.maxConnections) connections is reached",
                           metadata: ["peer": "\(SocketAddress.peer(of: result))"])
            Glibc.close(result)
        } else if result >= 0 {
            var one: Int32 = 1
            setsockopt(result, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            // The port as configured now: its parameters may have changed since it was opened.
            let port = target.port(l.port.id).flatMap { $0.sameEndpoint(as: l.port) ? $0 : nil } ?? l.port
            let incoming = IncomingConnection(fd: result, port: port, peer: SocketAddress.peer(of: result),
                                              local: SocketAddress.local(of: result))
            if let server, let next = server.nextReactor(), next !== self {
                next.adopt(incoming)
            } else {
                add(incoming)
            }
        } else if result != -ECANCELED {
            logger.warning("accept failed", metadata: ["errno": "\(-result)", "port": "\(l.port.serviceID)"])
        }
        armAccept(l)
    }

    private func drainInbox() {
        let items = inbox.withLock { list -> [IncomingConnection] in
            let items = list
            list.removeAll()
            return items
        }
        for c in items {
            if stopping { Glibc.close(c.fd) } else { add(c) }
        }
    }

    private func add(_ c: IncomingConnection) {
        let index: Int
        if let i = freeIndices.popLast() {
            index = i
        } else {
            index = connections.count
            connections.append(nil)
            generations.append(0)
        }
        generations[index] &+= 1
        let conn = Connection(fd: c.fd, index: index, generation: generations[index], reactor: self, port: c.port,
                              peer: c.peer, localAddress: c.local)
        connections[index] = conn
        logger.info("connection accepted", metadata: ["peer": "\(c.peer)", "local": "\(c.local):\(c.port.serviceID)"])
        conn.start()
    }

    /// Pins the calling thread to one CPU.
    static func pinCurrentThread(to cpu: Int) throws {
        guard fathom_pin_current_thread(Int32(cpu)) == 0 else {
            throw ServerError(message: "cannot pin a reactor to CPU \(cpu): \(String(cString: strerror(errno)))")
        }
    }

    @inline(__always)
    func scheduleFlush(_ c: Connection) { toFlush.append(c) }

    /// One SENDMSG per connection for everything queued this iteration.
    private func flushScheduled() {
        guard !toFlush.isEmpty else { return }
        for c in toFlush {
            c.flushScheduled = false
            c.flushSends()
        }
        toFlush.removeAll(keepingCapacity: true)
    }

    /// Retries commands of every connection here that waited for a write gate.
    func retryDeferred() {
        for case let c? in connections { c.retryDeferred() }
    }

    func removeConnection(_ c: Connection) {
        guard c.index < connections.count, connections[c.index] === c else { return }
        server?.connectionClosed()
        connections[c.index] = nil
        freeIndices.append(c.index)
    }

    /// Closes the connections of controllers that were ended (by a configuration change)
    /// now rather than at the next tick, so a denied host loses access at once.
    func closeEndedControllers() {
        for case let c? in connections where c.state != .closing {
            if let ctrl = c.controller, ctrl.isDead { c.close("controller \(ctrl.id) was ended by a configuration change") }
        }
    }

    // MARK: Tick

    private func tick() {
        if id == 0 { target.reclaim(nowMs: nowMs) }
        for case let c? in connections {
            guard c.state != .closing else { continue }
            if let ctrl = c.controller {
                if ctrl.isDead {
                    c.close("controller \(ctrl.id) is gone")
                } else if c.isAdminQueue && ctrl.keepAliveExpired(nowMs: nowMs) {
                    logger.warning("keep-alive timeout, tearing down controller",
                                   metadata: ["cntlid": "\(ctrl.id)", "host": "\(ctrl.hostNQN)", "kato_ms": "\(ctrl.keepAliveTimeoutMs)"])
                    ctrl.fail()
                    c.close("keep-alive timeout")
                }
            } else if nowMs - c.createdAtMs > 30_000 {
                c.close("no Connect within 30 s")
            }
            if c.state != .closing && c.pduOverdue(nowMs: nowMs, timeoutMs: settings.pduTimeoutMs) {
                logger.warning("closing a connection whose PDU is incomplete after \(settings.pduTimeoutMs / 1000) s",
                               metadata: ["peer": "\(c.peer)"])
                c.close("PDU incomplete for \(settings.pduTimeoutMs / 1000) s")
                continue
            }
            c.checkR2TDeadline(nowMs: nowMs, timeoutMs: settings.r2tTimeoutMs)
        }
        if stopping {
            for case let c? in connections where c.state != .closing {
                // Shutdown: close once nothing is outstanding but held AERs, or at the deadline.
                let busy = (0..<c.slots.count).contains { i in
                    let st = c.slots[i].pointee.state
                    return st != .free && st != .held
                }
                if !busy || nowMs >= stopDeadlineMs { c.close("target shutting down") }
            }
        }
    }

    private func beginStop() {
        stopping = true
        stopDeadlineMs = nowMs + 5_000
        for l in listeners { l.close() }
        for case let c? in connections { c.stopReading = true }
        tick()
    }
}
