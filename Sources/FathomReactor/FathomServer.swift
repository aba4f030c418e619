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
    /// The configuration in effect (reload compares against it).
    private var config: TargetConfig
    private var nextIndex = 0
    private let logger: Logger
    /// TCP ports actually bound, in configuration order (useful when the config said 0).
    public let boundPorts: [UInt16]

    /// Opens a namespace's backend instead of the configured kind (tests inject faults this
    /// way, like SPDK's error bdev); returning nil falls back to the configuration.
    public typealias BackendOpener = (TargetConfig.NamespaceSpec) throws -> BlockBackend?
    private let backendOpener: BackendOpener?

    /// `cpus`: pin reactor k to cpus[k % cpus.count] (nil: let the scheduler place them).
    public init(config: TargetConfig, settings: TargetSettings = TargetSettings(), reactorCount: Int, cpus: [Int]? = nil,
                logger: Logger, openBackend: BackendOpener? = nil) throws {
        self.logger = logger
        self.backendOpener = openBackend
        var subsystems: [Subsystem] = []
        for spec in config.subsystems {
            let namespaces = try spec.namespaces.map {
                try Self.openNamespace($0, subsystem: spec.nqn, stateDirectory: settings.stateDirectory, logger: logger, opener: openBackend)
            }
            subsystems.append(Subsystem(nqn: spec.nqn, serial: spec.serial, model: spec.model, allowAnyHost: spec.allowAnyHost,
                                        allowedHosts: Set(spec.allowedHosts), namespaces: namespaces))
        }
        var listeners: [Listener] = []
        do {
            for l in config.listeners {
                let port = Port(id: l.portID, address: l.address, serviceID: String(l.port), isIPv6: l.isIPv6, subsystemNQNs: l.subsystems)
                listeners.append(try Listener(port: port, address: l.address, tcpPort: l.port))
            }
        } catch {
            for l in listeners { l.close() }
            throw error
        }
        self.config = config
        boundPorts = listeners.map(\.boundPort)
        target = Target(settings: settings, subsystems: subsystems, ports: listeners.map(\.port))
        let target = self.target
        reactors = (0..<max(1, reactorCount)).map { Reactor(id: $0, target: target, logger: logger) }
        reactors[0].listeners = listeners
        if let cpus, !cpus.isEmpty {
            for (k, r) in reactors.enumerated() { r.cpu = cpus[k % cpus.count] }
        }
        for r in reactors { r.server = self }
        for l in listeners {
            self.logger.info("listening", metadata: ["address": "\(l.port.address)", "port": "\(l.boundPort)",
                                                      "portid": "\(l.port.id)", "subsystems": "\(l.port.subsystemNQNs.joined(separator: ","))"])
        }
    }

    /// Opens the backend of one configured namespace. Errors name the namespace and its path.
    static func openNamespace(_ ns: TargetConfig.NamespaceSpec, subsystem: String, stateDirectory: String?, logger: Logger,
                              reservations: ReservationState? = nil, opener: BackendOpener? = nil) throws -> Namespace {
        let backend: BlockBackend
        var label = ns.path
        do {
            if let custom = try opener?(ns) {
                backend = custom
            } else {
            switch ns.backend {
            case .file:
                backend = try FileBackend(path: ns.path, readOnly: ns.readOnly, directIO: ns.directIO, blockSize: ns.blockSize)
            case .memory:
                backend = try MemoryBackend(bytes: ns.size, blockSize: ns.blockSize, readOnly: ns.readOnly)
                label = "memory:\(ns.size)"
            case .null:
                backend = NullBackend(bytes: ns.size, blockSize: ns.blockSize, readOnly: ns.readOnly)
                label = "null:\(ns.size)"
            }
            }
        } catch {
            throw ServerError(message: "subsystem \(subsystem) namespace \(ns.nsid): device.path = \"\(ns.path)\": \(error)")
        }
        logger.info("namespace ready", metadata: [
            "subsystem": "\(subsystem)", "nsid": "\(ns.nsid)", "backend": "\(label)",
            "blocks": "\(backend.blockCount)", "block_size": "\(1 << backend.blockSizeShift)", "readonly": "\(ns.readOnly)"])
        let state = reservations ?? ReservationState(
            persistencePath: stateDirectory.map { "\($0)/reservations-\(UUIDText.format(ns.nguid, dashes: false))" })
        return Namespace(nsid: ns.nsid, nguid: ns.nguid, uuid: ns.uuid, readOnly: ns.readOnly,
                         backend: StorageNamespace(backend), label: label, reservations: state,
                         visibleHosts: ns.visibleHosts.map(Set.init))
    }

    /// Applies a new configuration to the running target: namespaces are added, removed,
    /// replaced or resized (a backing file that grew or shrank) and every controller of the
    /// subsystem gets a Namespace Attribute Changed event. Every new backend is opened before
    /// anything changes, so a failure leaves the running target as it was. Changes that need
    /// a restart (ports, subsystems, hosts) are reported, not applied.
    @discardableResult
    public func reload(_ new: TargetConfig) throws -> [String] {
        var notes: [String] = []
        if new.listeners != config.listeners { notes.append("ports changed: restart fathomd to apply") }
        var plans: [(Subsystem, [Namespace])] = []
        for spec in new.subsystems {
            guard let subsystem = target.subsystems[spec.nqn] else {
                notes.append("subsystem \(spec.nqn) is new: restart fathomd to add it")
                continue
            }
            let old = config.subsystems.first { $0.nqn == spec.nqn }
            if old?.allowAnyHost != spec.allowAnyHost || old?.allowedHosts != spec.allowedHosts || old?.serial != spec.serial
                || old?.model != spec.model {
                notes.append("subsystem \(spec.nqn): host access or identity changed: restart fathomd to apply")
            }
            var list: [Namespace] = []
            for ns in spec.namespaces {
                if let current = subsystem.namespace(ns.nsid), old?.namespaces.first(where: { $0.nsid == ns.nsid }) == ns,
                   !Self.sizeChanged(current, ns) {
                    list.append(current)
                } else {
                    // A resized or reopened namespace keeps its registrants and reservation.
                    let keep = subsystem.namespace(ns.nsid).flatMap { $0.nguid == ns.nguid ? $0.reservations : nil }
                    list.append(try Self.openNamespace(ns, subsystem: spec.nqn, stateDirectory: target.settings.stateDirectory,
                                                       logger: logger, reservations: keep, opener: backendOpener))
                }
            }
            plans.append((subsystem, list))
        }
        for s in config.subsystems where !new.subsystems.contains(where: { $0.nqn == s.nqn }) {
            notes.append("subsystem \(s.nqn) was removed from the file: restart fathomd to remove it")
        }
        for (subsystem, list) in plans {
            let before = Set(subsystem.namespaces.map(\.nsid))
            let changed = subsystem.replaceNamespaces(list)
            for nsid in changed {
                let now = subsystem.namespace(nsid)
                let what = now == nil ? "removed" : (before.contains(nsid) ? "replaced or resized" : "added")
                notes.append("subsystem \(subsystem.nqn) namespace \(nsid) \(what)")
            }
            target.namespacesChanged(in: subsystem, changed)
        }
        // Keep the old namespaces of subsystems that need a restart as they are.
        var applied = new
        applied.listeners = config.listeners
        applied.subsystems = new.subsystems.filter { target.subsystems[$0.nqn] != nil }
            + config.subsystems.filter { s in !new.subsystems.contains { $0.nqn == s.nqn } }
        config = applied
        for n in notes { logger.notice("reload: \(n)") }
        return notes
    }

    /// True when a file-backed namespace's backing file no longer has the size in use.
    private static func sizeChanged(_ current: Namespace, _ spec: TargetConfig.NamespaceSpec) -> Bool {
        guard spec.backend == .file else { return false }
        var st = stat()
        guard stat(spec.path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return false }
        return UInt64(st.st_size) >> UInt64(current.blockSizeShift) != current.blockCount
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
