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
    private var backends: [BlockBackend] = []
    private var nextIndex = 0
    private let logger: Logger
    /// TCP ports actually bound, in configuration order (useful when the config said 0).
    public let boundPorts: [UInt16]

    public init(config: TargetConfig, settings: TargetSettings = TargetSettings(), reactorCount: Int, logger: Logger) throws {
        self.logger = logger
        var opened: [BlockBackend] = []
        var subsystems: [Subsystem] = []
        do {
            for spec in config.subsystems {
                var namespaces: [Namespace] = []
                for ns in spec.namespaces {
                    let backend: FileBackend
                    do {
                        backend = try FileBackend(path: ns.path, readOnly: ns.readOnly, directIO: ns.directIO, blockSize: ns.blockSize)
                    } catch {
                        throw ServerError(message: "subsystem \(spec.nqn) namespace \(ns.nsid): device.path = \"\(ns.path)\": \(error)")
                    }
                    opened.append(backend)
                    namespaces.append(Namespace(nsid: ns.nsid, nguid: ns.nguid, uuid: ns.uuid, readOnly: ns.readOnly,
                                                backend: StorageNamespace(backend), label: ns.path))
                    logger.info("namespace ready", metadata: [
                        "subsystem": "\(spec.nqn)", "nsid": "\(ns.nsid)", "path": "\(ns.path)",
                        "blocks": "\(backend.blockCount)", "block_size": "\(1 << backend.blockSizeShift)",
                        "readonly": "\(ns.readOnly)", "direct_io": "\(backend.usesDirectIO)"])
                }
                subsystems.append(Subsystem(nqn: spec.nqn, serial: spec.serial, model: spec.model, allowAnyHost: spec.allowAnyHost,
                                            allowedHosts: Set(spec.allowedHosts), namespaces: namespaces))
            }
        } catch {
            for b in opened { b.close() }
            throw error
        }
        backends = opened
        var listeners: [Listener] = []
        do {
            for l in config.listeners {
                let port = Port(id: l.portID, address: l.address, serviceID: String(l.port), isIPv6: l.isIPv6, subsystemNQNs: l.subsystems)
                listeners.append(try Listener(port: port, address: l.address, tcpPort: l.port))
            }
        } catch {
            for l in listeners { l.close() }
            for b in opened { b.close() }
            throw error
        }
        boundPorts = listeners.map(\.boundPort)
        target = Target(settings: settings, subsystems: subsystems, ports: listeners.map(\.port))
        let target = self.target
        reactors = (0..<max(1, reactorCount)).map { Reactor(id: $0, target: target, logger: logger) }
        reactors[0].listeners = listeners
        for r in reactors { r.server = self }
        for l in listeners {
            self.logger.info("listening", metadata: ["address": "\(l.port.address)", "port": "\(l.boundPort)",
                                                 "portid": "\(l.port.id)", "subsystems": "\(l.port.subsystemNQNs.joined(separator: ","))"])
        }
    }

    /// Round-robin placement of new connections (called by the accepting reactor only).
    func nextReactor() -> Reactor? {
        let r = reactors[nextIndex % reactors.count]
        nextIndex &+= 1
        return r
    }

    /// Starts one thread per reactor; returns once every ring is up.
    public func start() throws {
        let started = Atomic<Int>(0)
        let failure = Mutex<String?>(nil)
        for r in reactors {
            let box = ThreadBody {
                do {
                    try r.run()
                } catch {
                    failure.withLock { $0 = "\(error)" }
                    started.add(1, ordering: .releasing)
                    return
                }
            }
            threads.append(try spawnThread(box))
        }
        // Rings are created on their own threads (SINGLE_ISSUER); wait until each is
        // either running or has failed. A reactor counts as started when its ring exists.
        var waited = 0
        while waited < 2000 {
            if let f = failure.withLock({ $0 }) {
                stop()
                throw ServerError(message: f)
            }
            if reactors.allSatisfy({ $0.ring != nil }) { return }
            usleep(1000)
            waited += 1
        }
        _ = started
    }

    /// Stops accepting, finishes or fails in-flight commands (5 s at most), closes every
    /// connection and joins the reactor threads.
    public func stop() {
        for r in reactors { r.requestStop() }
        for t in threads { pthread_join(t, nil) }
        threads.removeAll()
        for b in backends { b.close() }
        backends.removeAll()
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
