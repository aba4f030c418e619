import FathomConfig
import FathomReactor
import FathomStorage
import FathomTarget
import FoundationEssentials
import NVMeWire
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Executes control requests against the running daemon. The nvmetcli document is the
/// source of truth: a change edits a copy, validates it and applies it through
/// `FathomServer.apply` (all or nothing); only then does the copy become the document.
/// A SIGHUP reload goes through here too, so the two never race.
public final class ControlService {
    public let server: FathomServer
    /// The file the daemon was started with (`save` writes it back; nil for the demo).
    public let configPath: String?
    public static let version = "0.3.0"
    private let document: Mutex<NvmetcliConfig>
    private let startedAtMs = MonotonicClock.nowMs()

    public init(server: FathomServer, document: NvmetcliConfig, configPath: String?) {
        self.server = server
        self.document = Mutex(document)
        self.configPath = configPath
    }

    public var currentDocument: NvmetcliConfig { document.withLock { $0 } }

    public func handle(_ r: ControlRequest) -> ControlResponse {
        do {
            switch r.command {
            case "status": return status()
            case "subsystem.list": return subsystems()
            case "namespace.list": return namespaces(r.subsystem)
            case "port.list": return ports()
            case "connections": return connections()
            case "save": return try save(to: r.file)
            case "subsystem.add": return try change(r, ConfigEditor.addSubsystem)
            case "subsystem.remove": return try change(r, ConfigEditor.removeSubsystem)
            case "namespace.add": return try change(r, ConfigEditor.addNamespace)
            case "namespace.remove": return try change(r, ConfigEditor.removeNamespace)
            case "namespace.resize": return try resize(r)
            case "host.allow": return try change(r, ConfigEditor.allowHost)
            case "host.deny": return try change(r, ConfigEditor.denyHost)
            case "port.add": return try change(r, ConfigEditor.addPort)
            case "port.remove": return try change(r, ConfigEditor.removePort)
            case "port.ana": return try change(r, ConfigEditor.setANAState)
            case "dataset.publish": return try change(r, ConfigEditor.publishDataset)
            case "clone.list": return clones(r)
            case "clone.reset": return try resetClone(r, delete: false)
            case "clone.delete": return try resetClone(r, delete: true)
            case "referral.add": return try change(r, ConfigEditor.addReferral)
            case "referral.remove": return try change(r, ConfigEditor.removeReferral)
            default: return .failure("unknown command \"\(r.command)\"")
            }
        } catch {
            return .failure(error.message)
        }
    }

    /// SIGHUP: re-reads the file and applies the difference.
    public func reload(path: String) throws -> [String] {
        try document.withLock { doc in
            let raw = try TargetConfig.loadRaw(path: path)
            let notes = try server.apply(TargetConfig.validate(raw))
            doc = raw
            return notes
        }
    }

    // MARK: Changes

    private func change(_ r: ControlRequest, _ edit: (inout NvmetcliConfig, ControlRequest) throws(ControlError) -> Void) throws(ControlError) -> ControlResponse {
        try document.withLock { doc throws(ControlError) -> ControlResponse in
            var next = doc
            try edit(&next, r)
            let notes = try apply(next)
            doc = next
            var response = ControlResponse(ok: true)
            response.changes = notes
            return response
        }
    }

    private func apply(_ next: NvmetcliConfig) throws(ControlError) -> [String] {
        let config: TargetConfig
        do {
            config = try TargetConfig.validate(next)
        } catch {
            throw ControlError("the change would make the configuration invalid: \(error)")
        }
        do {
            return try server.apply(config)
        } catch {
            throw ControlError("\(error)")
        }
    }

    /// Resize: a file namespace given --size has its file grown first (never shrunk: that
    /// would discard the host's data); then the namespace is reopened at its new size and
    /// hosts get a Namespace Attribute Changed event.
    private func resize(_ r: ControlRequest) throws(ControlError) -> ControlResponse {
        let doc = currentDocument
        let (s, n) = try ConfigEditor.namespaceIndex(doc, r)
        let device = doc.subsystems[s].namespaces![n].device
        if (device.backend ?? "file") == "file", let text = r.size, let path = device.path {
            guard let bytes = ByteSize.parse(text), bytes <= UInt64(Int64.max) else { throw ControlError("--size \(text) is not a size such as 10G") }
            var st = stat()
            guard stat(path, &st) == 0 else { throw ControlError("\(path): \(String(cString: strerror(errno)))") }
            guard (st.st_mode & S_IFMT) == S_IFREG else { throw ControlError("\(path) is a block device: resize the device, then run resize without --size") }
            guard bytes >= UInt64(st.st_size) else {
                throw ControlError("--size \(text) is smaller than \(path) (\(st.st_size) bytes): shrinking would discard data")
            }
            guard truncate(path, off_t(bytes)) == 0 else { throw ControlError("cannot grow \(path): \(String(cString: strerror(errno)))") }
        }
        return try change(r, ConfigEditor.resizeNamespace)
    }

    /// Writes the running configuration as nvmetcli JSON: temp file, fsync, rename, fsync of
    /// the directory, so a crash leaves the old file or the new one, never half of one.
    private func save(to file: String?) throws(ControlError) -> ControlResponse {
        guard let path = file ?? configPath else {
            throw ControlError("the daemon runs without a config file (demo): give save a --file to write")
        }
        let bytes = currentDocument.encoded() + [0x0A]
        try AtomicFile.write(bytes, to: path)
        var response = ControlResponse(ok: true)
        response.saved = path
        return response
    }

    // MARK: Clones

    private func clones(_ r: ControlRequest) -> ControlResponse {
        var out: [CloneInfo] = []
        let connected = Set(server.target.liveControllers.map { "\($0.subsystem.nqn) \($0.hostNQN)" })
        for s in server.runningConfig.subsystems where r.subsystem == nil || s.nqn == r.subsystem {
            for ns in s.namespaces where ns.backend == .clone && (r.nsid == nil || ns.nsid == r.nsid) {
                for c in server.clones(subsystem: s.nqn, nsid: ns.nsid)?.list() ?? [] where r.host == nil || c.host == r.host {
                    out.append(CloneInfo(subsystem: s.nqn, nsid: ns.nsid, host: c.host, overlay: c.overlay, writtenBytes: c.writtenBytes,
                                         connected: connected.contains("\(s.nqn) \(c.host)"), error: c.error))
                }
            }
        }
        var response = ControlResponse(ok: true)
        response.clones = out
        return response
    }

    /// Reset (forget the host's writes) or delete (also remove its files). Refused while the
    /// host is connected: its kernel caches blocks that would change under it.
    private func resetClone(_ r: ControlRequest, delete: Bool) throws(ControlError) -> ControlResponse {
        let nqn = try ConfigEditor.required(r.subsystem, "--subsystem")
        let nsid = try ConfigEditor.required(r.nsid, "--nsid")
        let host = try ConfigEditor.required(r.host, "host NQN")
        guard let set = server.clones(subsystem: nqn, nsid: nsid) else { throw ControlError("\(nqn) has no clone namespace \(nsid)") }
        if server.target.liveControllers.contains(where: { $0.subsystem.nqn == nqn && $0.hostNQN == host }) {
            throw ControlError("\(host) is connected to \(nqn): disconnect it first (nvme disconnect on that host, or fathomctl host deny)")
        }
        do {
            try set.reset(host: host, delete: delete)
        } catch {
            throw ControlError("\(error)")
        }
        var response = ControlResponse(ok: true)
        response.changes = ["clone of \(host) in \(nqn) namespace \(nsid) \(delete ? "deleted" : "reset to its base")"]
        return response
    }

    // MARK: Reports

    private func status() -> ControlResponse {
        let config = server.runningConfig
        var r = ControlResponse(ok: true)
        let controllers = server.target.liveControllers
        r.status = StatusInfo(version: Self.version, pid: getpid(), uptimeSeconds: (MonotonicClock.nowMs() - startedAtMs) / 1000,
                              configFile: configPath, subsystems: config.subsystems.count,
                              namespaces: config.subsystems.reduce(0) { $0 + $1.namespaces.count }, ports: portInfos(),
                              controllers: controllers.count,
                              connections: controllers.reduce(0) { $0 + 1 + server.target.connectedIOQueues(of: $1.id) })
        let zc = server.zeroCopySendCounts
        r.status?.zeroCopySends = zc.sent
        r.status?.zeroCopyCopied = zc.copied
        r.status?.bufferPoolBytes = server.bufferPoolSize
        let ms = server.multishotReceiveCounts
        r.status?.multishotConnections = ms.connections
        r.status?.multishotArms = ms.arms
        r.status?.multishotLeftForData = ms.leftForData
        var usage = rusage()
        if getrusage(RUSAGE_SELF.rawValue, &usage) == 0 { r.status?.majorPageFaults = usage.ru_majflt }
        return r
    }

    private func subsystems() -> ControlResponse {
        let config = server.runningConfig
        let controllers = server.target.liveControllers
        var r = ControlResponse(ok: true)
        r.subsystems = config.subsystems.map { s in
            SubsystemInfo(nqn: s.nqn, serial: s.serial, model: s.model, allowAnyHost: s.allowAnyHost, allowedHosts: s.allowedHosts,
                          namespaces: s.namespaces.count,
                          ports: config.listeners.filter { $0.subsystems.contains(s.nqn) }.map(\.portID),
                          controllers: controllers.filter { $0.subsystem.nqn == s.nqn }.count)
        }
        return r
    }

    private func namespaces(_ only: String?) -> ControlResponse {
        var r = ControlResponse(ok: true)
        var list: [NamespaceInfo] = []
        for spec in server.runningConfig.subsystems where only == nil || spec.nqn == only {
            let live = server.target.subsystem(spec.nqn)
            for ns in spec.namespaces {
                let running = live?.namespace(ns.nsid)
                let blockSize = running.map { 1 << Int($0.blockSizeShift) } ?? ns.blockSize
                list.append(NamespaceInfo(subsystem: spec.nqn, nsid: ns.nsid, backend: ns.backend.rawValue,
                                          path: ns.backend == .file || ns.backend == .clone ? ns.path : nil,  // a clone: its base
                                          bytes: (running?.blockCount ?? 0) * UInt64(blockSize), blockSize: blockSize,
                                          readonly: ns.readOnly, uuid: UUIDText.format(ns.uuid, dashes: true),
                                          nguid: UUIDText.format(ns.nguid, dashes: false), visibleTo: ns.visibleHosts,
                                          anaGroup: ns.anaGroupID, io: server.dataPath(subsystem: spec.nqn, nsid: ns.nsid)))
            }
        }
        r.namespaces = list
        return r
    }

    private func portInfos() -> [PortInfo] {
        server.target.ports.map {
            PortInfo(id: $0.id, family: $0.isIPv6 ? "ipv6" : "ipv4", address: $0.address, service: $0.serviceID,
                     subsystems: $0.subsystemNQNs, referrals: $0.referrals.map { "\($0.name)=\($0.address):\($0.serviceID)" },
                     anaGroups: $0.ana.configuredGroups.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.name)" })
        }
    }

    private func ports() -> ControlResponse {
        var r = ControlResponse(ok: true)
        r.ports = portInfos()
        return r
    }

    private func connections() -> ControlResponse {
        var r = ControlResponse(ok: true)
        r.connections = server.target.liveControllers.sorted { $0.id < $1.id }.map { c in
            let io = c.ioCounters
            return ConnectionInfo(controller: c.id, subsystem: c.subsystem.nqn, host: c.hostNQN, address: c.peer, port: c.port.id,
                                  ioQueues: server.target.connectedIOQueues(of: c.id), keepAliveMs: c.keepAliveTimeoutMs,
                                  readCommands: io.readCommands, writeCommands: io.writeCommands,
                                  bytesRead: io.bytesRead, bytesWritten: io.bytesWritten)
        }
        return r
    }
}
