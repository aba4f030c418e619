import NVMeWire
import Synchronization

/// One controller of the dynamic model: created by an admin-queue Connect, joined by the
/// I/O queues that name its controller ID, gone when its admin queue goes or its keep-alive
/// expires.
///
/// Threading: fields marked "admin queue" are touched only by the reactor that owns the
/// admin connection. I/O queues on other reactors read only the atomics and `let`s.
public final class Controller {
    public let id: UInt16
    public let subsystem: Subsystem
    public let hostNQN: String
    public let hostID: [UInt8]
    public let hostIdentifier: HostIdentifier
    public let port: Port
    public let peer: String
    public let settings: TargetSettings
    public var isDiscovery: Bool { subsystem.kind == .discovery }

    // Admin queue state.
    public internal(set) var configuration: UInt32 = 0  // CC
    public internal(set) var status: UInt32 = 0         // CSTS
    public internal(set) var asyncEventConfiguration: UInt32 = 0
    public internal(set) var timestamp: UInt64 = 0
    public internal(set) var timestampSetAtMs: Int64 = 0
    var errorRecovery: UInt32 = 0
    var temperatureThreshold: UInt32 = 0x0157
    var writeAtomicity: UInt32 = 0
    var hostBehavior = [UInt8](repeating: 0, count: 512)
    /// Command IDs of held Asynchronous Event Requests, oldest first.
    public internal(set) var heldAsyncEvents: [UInt16] = []
    /// Events waiting for an AER to carry them (CQE DW0 values).
    public internal(set) var queuedEvents: [UInt32] = []
    var changedNamespaces: [UInt32] = []
    /// A namespace notice was reported and the host has not yet read log 04h.
    var namespaceNoticeMasked = false
    /// A discovery log change was reported and the host has not yet read log 70h.
    var discoveryNoticeMasked = false
    /// An ANA change was reported and the host has not yet read log 0Ch.
    var anaNoticeMasked = false

    /// How events reach this controller's admin queue, installed by the transport.
    public struct EventRoute {
        /// Runs a closure on the thread that owns the admin queue.
        public var run: (@escaping () -> Void) -> Void
        /// Sends the completion of a held Asynchronous Event Request (command ID, DW0).
        public var complete: (UInt16, UInt32) -> Void
        public init(run: @escaping (@escaping () -> Void) -> Void, complete: @escaping (UInt16, UInt32) -> Void) {
            self.run = run
            self.complete = complete
        }
    }
    private let eventRoute = Mutex<EventRoute?>(nil)
    var eventRouteNow: EventRoute? { eventRoute.withLock { $0 } }
    // Reservation notifications (admin queue state).
    var reservationLog: [(count: UInt64, notice: ReservationNotice, nsid: UInt32)] = []
    var reservationLogCount: UInt64 = 0
    var reservationNoticeMasked = false
    /// Reservation Notification Mask per NSID (0xFFFFFFFF: the default for all).
    var reservationMasks: [UInt32: UInt32] = [:]

    // Shared between reactors.
    private let keepAliveMs: Atomic<UInt32>
    private let lastActivityMs: Atomic<Int64>
    private let dead = Atomic<Bool>(false)
    /// I/O queues granted by Set Features Number of Queues (read at I/O Connect).
    let grantedIOQueues = Atomic<Int>(0)
    private let writeCacheEnabled = Atomic<Bool>(true)
    let counters = Mutex(HealthCounters())
    private let readCommands = Atomic<UInt64>(0)
    private let writeCommands = Atomic<UInt64>(0)
    private let bytesRead = Atomic<UInt64>(0)
    private let bytesWritten = Atomic<UInt64>(0)
    private let createdAtMs = MonotonicClock.nowMs()
    let errors = Mutex<[ErrorLogEntry]>([])
    private let errorCount = Atomic<UInt64>(0)

    init(id: UInt16, subsystem: Subsystem, hostNQN: String, hostID: [UInt8], port: Port, peer: String,
         keepAliveMs: UInt32, settings: TargetSettings) {
        self.id = id
        self.subsystem = subsystem
        self.hostNQN = hostNQN
        self.hostID = hostID
        self.hostIdentifier = HostIdentifier(hostID)
        self.port = port
        self.peer = peer
        self.settings = settings
        self.keepAliveMs = Atomic(keepAliveMs)
        self.lastActivityMs = Atomic(MonotonicClock.nowMs())
    }

    /// Entries per I/O queue (CAP.MQES + 1): the port's max_queue_size, else the target's.
    public var maxQueueEntries: Int { port.maxQueueSize ?? settings.maxQueueEntries }
    /// In-capsule data on I/O queues (IOCCSZ): the port's inline_data_size, else the target's.
    public var ioInCapsuleDataSize: Int { port.inlineDataSize ?? settings.ioInCapsuleDataSize }
    /// I/O queues a controller may have: the subsystem's qid_max, else the target's.
    public var maxIOQueues: Int { min(subsystem.identity.maxIOQueues ?? settings.maxIOQueues, settings.maxIOQueues) }

    public var keepAliveTimeoutMs: UInt32 { keepAliveMs.load(ordering: .relaxed) }

    /// Any command counts as keep-alive traffic (we do not advertise TBKAS, but counting
    /// traffic only makes the target more forgiving, never less).
    @inline(__always)
    /// Stores only when the millisecond changed: the queues of one controller run on several
    /// reactors, and a store per command would move the cache line between their cores.
    public func noteActivity(nowMs: Int64) {
        if lastActivityMs.load(ordering: .relaxed) != nowMs { lastActivityMs.store(nowMs, ordering: .relaxed) }
    }

    /// True once the host has been silent for longer than its keep-alive timeout. The
    /// check runs on a 1 s tick, so the effective timeout is KATO plus up to a second.
    public func keepAliveExpired(nowMs: Int64) -> Bool {
        let kato = Int64(keepAliveMs.load(ordering: .relaxed))
        return kato > 0 && nowMs - lastActivityMs.load(ordering: .relaxed) > kato
    }

    /// Marks the controller as gone; every reactor closes its queues on its next tick.
    public func fail() { dead.store(true, ordering: .releasing) }
    public var isDead: Bool { dead.load(ordering: .acquiring) }

    public var isReady: Bool { status & 1 != 0 }

    /// A namespace of the subsystem, if this controller's host may see it.
    @inline(__always)
    public func namespace(_ nsid: UInt32) -> Namespace? {
        guard let ns = subsystem.namespace(nsid), ns.isVisible(to: hostNQN) else { return nil }
        return ns
    }

    /// The namespaces this controller's host may see, in NSID order.
    public var visibleNamespaces: [Namespace] { subsystem.namespaces.filter { $0.isVisible(to: hostNQN) } }

    /// Volatile Write Cache feature. When the host turns it off, every write must be
    /// durable on completion, so the I/O path adds FUA to each write.
    public var volatileWriteCacheEnabled: Bool {
        get { writeCacheEnabled.load(ordering: .relaxed) }
        set { writeCacheEnabled.store(newValue, ordering: .relaxed) }
    }

    /// Adds I/O statistics for the SMART log (called once per completed I/O command).
    /// Relaxed atomic adds, not a lock: queues of one controller run on several reactors.
    @inline(__always)
    public func account(read: Bool, bytes: Int) {
        if read {
            readCommands.wrappingAdd(1, ordering: .relaxed)
            bytesRead.wrappingAdd(UInt64(bytes), ordering: .relaxed)
        } else {
            writeCommands.wrappingAdd(1, ordering: .relaxed)
            bytesWritten.wrappingAdd(UInt64(bytes), ordering: .relaxed)
        }
    }

    /// I/O counters for operators (fathomctl connections).
    public var ioCounters: (readCommands: UInt64, writeCommands: UInt64, bytesRead: UInt64, bytesWritten: UInt64) {
        (readCommands.load(ordering: .relaxed), writeCommands.load(ordering: .relaxed),
         bytesRead.load(ordering: .relaxed), bytesWritten.load(ordering: .relaxed))
    }

    /// SMART counters as of now.
    func healthCounters() -> HealthCounters {
        var c = counters.withLock { $0 }
        c.readCommands = readCommands.load(ordering: .relaxed)
        c.writeCommands = writeCommands.load(ordering: .relaxed)
        c.bytesRead = bytesRead.load(ordering: .relaxed)
        c.bytesWritten = bytesWritten.load(ordering: .relaxed)
        c.powerOnHours = UInt64(max(0, MonotonicClock.nowMs() - createdAtMs) / 3_600_000)
        return c
    }

    /// Records a failed command in the error information log (newest first, 64 kept).
    public func recordError(queueID: UInt16, commandID: UInt16, status: NVMeStatus, lba: UInt64 = 0, nsid: UInt32 = 0) {
        let n = errorCount.add(1, ordering: .relaxed).newValue
        errors.withLock {
            $0.insert(ErrorLogEntry(errorCount: n, queueID: queueID, commandID: commandID, status: status, lba: lba, nsid: nsid), at: 0)
            if $0.count > 64 { $0.removeLast() }
        }
        counters.withLock {
            $0.errorLogEntries = n
            if status.codeType == 2 { $0.mediaErrors += 1 }  // media and data integrity errors
        }
    }

    func setKeepAlive(_ ms: UInt32) { keepAliveMs.store(ms, ordering: .relaxed) }

    public func setEventRoute(_ route: EventRoute?) { eventRoute.withLock { $0 = route } }

    /// Namespaces of the subsystem were added, removed or resized: record them for the
    /// Changed Namespace List and, if the host enabled namespace notices (AEC bit 8), send a
    /// Namespace Attribute Changed event. Further notices wait until the host reads the log.
    /// Callable from any thread; the work runs on the admin queue's thread.
    public func namespacesChanged(_ nsids: [UInt32]) {
        guard let route = eventRoute.withLock({ $0 }) else { return }
        route.run { [self] in
            for n in nsids where !changedNamespaces.contains(n) { changedNamespaces.append(n) }
            guard asyncEventConfiguration & (1 << 8) != 0, !namespaceNoticeMasked else { return }
            namespaceNoticeMasked = true
            // Type 2 (notice), information 00h (namespace attribute changed), log page 04h.
            if let (cid, dw0) = postAsyncEvent(0x0004_0002) { route.complete(cid, dw0) }
        }
    }

    /// What a discovery log page shows changed: if the host enabled the notice (AEC bit 31),
    /// send a Discovery Log Page Change event (notice, information F0h, log page 70h). Further
    /// notices wait until the host reads the log. Callable from any thread.
    public func discoveryLogChanged() {
        guard isDiscovery, let route = eventRoute.withLock({ $0 }) else { return }
        route.run { [self] in
            guard asyncEventConfiguration & (1 << 31) != 0, !discoveryNoticeMasked else { return }
            discoveryNoticeMasked = true
            if let (cid, dw0) = postAsyncEvent(0x0070_F002) { route.complete(cid, dw0) }
        }
    }

    /// ANA states or group membership changed: if the host enabled the notice (AEC bit 11),
    /// send an ANA Change event (notice, information 03h, log page 0Ch), once until the host
    /// reads the log. Callable from any thread.
    public func anaChanged() {
        guard !isDiscovery, let route = eventRoute.withLock({ $0 }) else { return }
        route.run { [self] in
            guard asyncEventConfiguration & (1 << 11) != 0, !anaNoticeMasked else { return }
            anaNoticeMasked = true
            if let (cid, dw0) = postAsyncEvent(0x000C_0302) { route.complete(cid, dw0) }
        }
    }

    /// Holds an AER, or completes it at once with a queued event. Returns the event to
    /// deliver now, if any.
    func holdAsyncEvent(commandID: UInt16) -> UInt32? {
        if !queuedEvents.isEmpty { return queuedEvents.removeFirst() }
        heldAsyncEvents.append(commandID)
        return nil
    }

    /// Forgets the held AER `commandID` without completing it. Returns false if none is held.
    public func abandonAsyncEvent(commandID: UInt16) -> Bool {
        guard let k = heldAsyncEvents.firstIndex(of: commandID) else { return false }
        heldAsyncEvents.remove(at: k)
        return true
    }

    /// Queues an asynchronous event. Returns the held AER command to complete with it, if one
    /// is waiting (the caller sends the completion on the admin queue).
    public func postAsyncEvent(_ dw0: UInt32) -> (commandID: UInt16, dw0: UInt32)? {
        if !heldAsyncEvents.isEmpty { return (heldAsyncEvents.removeFirst(), dw0) }
        queuedEvents.append(dw0)
        return nil
    }
}
