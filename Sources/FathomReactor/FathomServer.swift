import FathomConfig
import FathomStorage
import FathomTarget
import Logging
import NVMeWire
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The running target: opens backends and listeners from a validated configuration, then
/// runs the reactors. Everything that can fail for a reason the operator must fix (a
/// missing file, a busy port) fails in `init`, before anything serves.
public final class FathomServer {
    public let target: Target
    private let reactors: [Reactor]
    private var threads: [pthread_t] = []
    private var nextIndex = 0
    let logger: Logger

    /// What the control path owns: the configuration in effect and the listening sockets.
    /// `apply` holds it for its whole run, so configuration changes happen one at a time.
    struct ControlState {
        var config = TargetConfig(listeners: [], subsystems: [])
        var listeners: [Listener] = []
    }
    let control = Mutex(ControlState())

    /// Opens a namespace's backend instead of the configured kind (tests inject faults this
    /// way, like SPDK's error bdev); returning nil falls back to the configuration.
    public typealias BackendOpener = (TargetConfig.NamespaceSpec) throws -> BlockBackend?
    let backendOpener: BackendOpener?

    /// `cpus`: pin reactor k to cpus[k % cpus.count] (nil: let the scheduler place them).
    /// Everything in `config` is opened here (backends, listening sockets); a failure throws
    /// and leaves nothing open.
    public init(config: TargetConfig, settings: TargetSettings = TargetSettings(), reactorCount: Int, cpus: [Int]? = nil,
                logger: Logger, openBackend: BackendOpener? = nil) throws {
        self.logger = logger
        self.backendOpener = openBackend
        target = Target(settings: settings, topology: Target.Topology(subsystems: [], ports: []))
        let target = self.target
        reactors = (0..<max(1, reactorCount)).map { Reactor(id: $0, target: target, logger: logger) }
        if let cpus, !cpus.isEmpty {
            for (k, r) in reactors.enumerated() { r.cpu = cpus[k % cpus.count] }
        }
        for r in reactors { r.server = self }
        // The first configuration is applied like any later one, to an empty target.
        try apply(config)
    }

    /// The configuration in effect.
    public var runningConfig: TargetConfig { control.withLock { $0.config } }

    /// TCP ports actually bound, in configuration order (useful when the config said 0).
    public var boundPorts: [UInt16] { control.withLock { $0.listeners.map(\.boundPort) } }

    /// Every reactor closes the connections of ended controllers (see `apply`).
    func closeEndedControllers() {
        for r in reactors { r.post { r.closeEndedControllers() } }
    }

    /// Installs the listening sockets on the accepting reactor.
    func installListeners(_ list: [(Listener, Port)]) {
        let r = reactors[0]
        r.post { r.replaceListeners(list) }
    }

    private let openConnections = Atomic<Int>(0)

    /// Counts a new connection in; false when the limit is reached.
    func admitConnection() -> Bool {
        if openConnections.add(1, ordering: .relaxed).newValue > target.settings.maxConnections {
            openConnections.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func connectionClosed() { openConnections.subtract(1, ordering: .relaxed) }

    private let zeroCopySends = Atomic<Int>(0)
    private let zeroCopyCopied = Atomic<Int>(0)

    /// One SENDMSG_ZC notification arrived; `copied`: the kernel copied the data after all.
    func countZeroCopySend(copied: Bool) {
        zeroCopySends.add(1, ordering: .relaxed)
        if copied { zeroCopyCopied.add(1, ordering: .relaxed) }
    }

    /// Zero-copy sends so far, and how many of them the kernel copied anyway (for status:
    /// whether SEND_ZC pays on this machine's network).
    public var zeroCopySendCounts: (sent: Int, copied: Int) {
        (zeroCopySends.load(ordering: .relaxed), zeroCopyCopied.load(ordering: .relaxed))
    }

    private let bufferPoolBytes = Atomic<Int>(0)

    func countBufferPoolBytes(_ bytes: Int) { bufferPoolBytes.add(bytes, ordering: .relaxed) }

    /// Bytes the reactors' buffer pools have mapped (they keep what they took, for reuse): the
    /// part of the daemon's memory that grows with the commands in flight at the busiest moment
    /// so far, up to the queues' depth × their transfer sizes.
    public var bufferPoolSize: Int { bufferPoolBytes.load(ordering: .relaxed) }

    private let multishotConnections = Atomic<Int>(0)
    private let multishotArms = Atomic<Int>(0)
    private let multishotLeftForData = Atomic<Int>(0)
    private let bufferRingsRanDry = Atomic<Int>(0)

    func countMultishotConnection() { multishotConnections.add(1, ordering: .relaxed) }
    func countMultishotArm() { multishotArms.add(1, ordering: .relaxed) }
    func countMultishotLeftForData() { multishotLeftForData.add(1, ordering: .relaxed) }
    func countBufferRingRanDry() { bufferRingsRanDry.add(1, ordering: .relaxed) }

    /// Connections so far that had a buffer ring for multishot recv; multishot recvs armed;
    /// how many were cancelled because write data started to flow; how many ended because their
    /// buffer ring was empty (tests check by these that the path they exercise was taken).
    public var multishotReceiveCounts: (connections: Int, arms: Int, leftForData: Int, ranDry: Int) {
        (multishotConnections.load(ordering: .relaxed), multishotArms.load(ordering: .relaxed),
         multishotLeftForData.load(ordering: .relaxed), bufferRingsRanDry.load(ordering: .relaxed))
    }

    /// A namespace's write gate opened: every reactor retries what waited for it.
    func retryDeferredEverywhere() {
        for r in reactors { r.post { r.retryDeferred() } }
    }

    /// Round-robin placement of new connections (called by the accepting reactor only).
    func nextReactor() -> Reactor? {
        let r = reactors[nextIndex % reactors.count]
        nextIndex &+= 1
        return r
    }

    /// Starts one thread per reactor; returns once every ring is up.
    public func start() throws {
        let ready = Atomic<Int>(0)
        let failure = Mutex<String?>(nil)
        for r in reactors {
            r.onReady = { ready.add(1, ordering: .releasing) }
            let box = ThreadBody {
                do {
                    try r.run()
                } catch {
                    failure.withLock { $0 = "\(error)" }
                }
            }
            threads.append(try spawnThread(box))
        }
        // Rings are created on their own threads (SINGLE_ISSUER): wait until each reactor
        // has its ring and is waiting on it, or one has failed.
        for _ in 0..<10_000 {
            if let f = failure.withLock({ $0 }) {
                stop()
                throw ServerError(message: f)
            }
            if ready.load(ordering: .acquiring) == reactors.count { return }
            usleep(1000)
        }
        stop()
        throw ServerError(message: "the reactors did not start within 10 s")
    }

    /// Stops accepting, finishes or fails in-flight commands (5 s at most), closes every
    /// connection and joins the reactor threads.
    public func stop() {
        for r in reactors { r.requestStop() }
        for t in threads { pthread_join(t, nil) }
        threads.removeAll()
    }
}

public struct ServerError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

private final class ThreadBody {
    let run: () -> Void
    init(_ run: @escaping () -> Void) { self.run = run }
}

private func spawnThread(_ body: ThreadBody) throws -> pthread_t {
    var thread = pthread_t()
    let context = Unmanaged.passRetained(body).toOpaque()
    let rc = pthread_create(&thread, nil, { arg in
        let body = Unmanaged<ThreadBody>.fromOpaque(arg!).takeRetainedValue()
        body.run()
        return nil
    }, context)
    guard rc == 0 else {
        Unmanaged<ThreadBody>.fromOpaque(context).release()
        throw ServerError(message: "cannot start a reactor thread: \(String(cString: strerror(rc)))")
    }
    return thread
}
