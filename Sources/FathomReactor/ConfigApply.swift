import FathomConfig
import FathomStorage
import FathomTarget
import Logging
import NVMeWire
#if canImport(Glibc)
import Glibc
#endif

/// Applying a configuration to the running target: the one path for the first start, a
/// SIGHUP reload and every control request. It works in two phases. First everything new
/// is opened (namespace backends, listening sockets); if anything fails, what was opened is
/// closed and the target is exactly as before. Then the difference is committed: hosts
/// that the new configuration still admits keep their controllers and connections.
extension FathomServer {
    /// Applies `new` and returns one line per change made (empty: nothing changed).
    @discardableResult
    public func apply(_ new: TargetConfig) throws -> [String] {
        try control.withLock { state throws -> [String] in
            let old = state.config
            var notes: [String] = []

            // Phase 1: open. Subsystems whose identity is unchanged keep their object.
            var subsystems: [Subsystem] = []
            var namespaceUpdates: [(Subsystem, [Namespace])] = []
            for spec in new.subsystems {
                let existing = target.subsystem(spec.nqn)
                let oldSpec = old.subsystems.first { $0.nqn == spec.nqn }
                var list: [Namespace] = []
                for ns in spec.namespaces {
                    let current = existing?.namespace(ns.nsid)
                    if let current, oldSpec?.namespaces.first(where: { $0.nsid == ns.nsid }) == ns, !Self.sizeChanged(current, ns) {
                        list.append(current)
                    } else {
                        // A resized or reopened namespace keeps its registrants and reservation.
                        let keep = current.flatMap { $0.nguid == ns.nguid ? $0.reservations : nil }
                        list.append(try Self.openNamespace(ns, subsystem: spec.nqn, stateDirectory: target.settings.stateDirectory,
                                                           tmpfsIO: target.settings.tmpfsIO, pageCacheReads: target.settings.pageCacheReads, logger: logger,
                                                           reservations: keep, opener: backendOpener))
                    }
                }
                let identity = Self.identity(spec)
                if let existing, existing.identity == identity {
                    subsystems.append(existing)
                    namespaceUpdates.append((existing, list))
                } else {
                    subsystems.append(Subsystem(nqn: spec.nqn, identity: identity, allowAnyHost: spec.allowAnyHost,
                                                allowedHosts: Set(spec.allowedHosts), namespaces: list))
                    notes.append(existing == nil ? "subsystem \(spec.nqn) added" : "subsystem \(spec.nqn) recreated (its identity changed)")
                }
            }
            var listeners: [(Listener, Port)] = []
            var anaUpdates: [(table: ANAStates, states: [UInt32: ANAState], port: TargetConfig.Listener)] = []
            var opened: [Listener] = []
            do {
                for l in new.listeners {
                    // Same address, same socket (port 0, "any free port", matches by port ID).
                    let reuse = old.listeners.firstIndex { $0.sameEndpoint(as: l) && (l.port != 0 || $0.portID == l.portID) }
                        .map { state.listeners[$0] }
                    let socket: Listener
                    if let reuse {
                        socket = reuse
                    } else {
                        socket = try Listener(port: Self.port(l, boundPort: l.port), address: l.address, tcpPort: l.port)
                        opened.append(socket)
                    }
                    var port = Self.port(l, boundPort: socket.boundPort)
                    // A kept port keeps its ANA table: its controllers hold it, and see changes at once.
                    if let current = target.port(l.portID), current.sameEndpoint(as: port) {
                        port.ana = current.ana
                        anaUpdates.append((current.ana, l.anaGroups, l))
                    } else {
                        port.ana = ANAStates(l.anaGroups)
                    }
                    listeners.append((socket, port))
                }
            } catch {
                for l in opened { l.close() }
                throw error
            }

            // Phase 2: commit. Nothing below can fail.
            for (subsystem, list) in namespaceUpdates {
                if let spec = new.subsystems.first(where: { $0.nqn == subsystem.nqn }),
                   subsystem.allowAnyHost != spec.allowAnyHost || subsystem.allowedHosts != Set(spec.allowedHosts) {
                    subsystem.setAccess(allowAnyHost: spec.allowAnyHost, allowedHosts: Set(spec.allowedHosts))
                    notes.append("subsystem \(subsystem.nqn): host access changed")
                }
                let before = Set(subsystem.namespaces.map(\.nsid))
                let changed = subsystem.replaceNamespaces(list)
                for nsid in changed {
                    let what = subsystem.namespace(nsid) == nil ? "removed" : (before.contains(nsid) ? "replaced or resized" : "added")
                    notes.append("subsystem \(subsystem.nqn) namespace \(nsid) \(what)")
                }
                target.namespacesChanged(in: subsystem, changed)
            }
            for s in old.subsystems where !new.subsystems.contains(where: { $0.nqn == s.nqn }) {
                notes.append("subsystem \(s.nqn) removed")
            }
            // ANA state changes are reported per group below.
            func withoutANA(_ l: TargetConfig.Listener) -> TargetConfig.Listener {
                var c = l
                c.anaGroups = [:]
                return c
            }
            for l in new.listeners where !old.listeners.map(withoutANA).contains(withoutANA(l)) {
                let before = old.listeners.first { $0.portID == l.portID }
                notes.append("port \(l.portID) (\(l.address):\(l.port)) \(before == nil ? "added" : "changed")")
            }
            for l in old.listeners where !new.listeners.contains(where: { $0.portID == l.portID }) {
                notes.append("port \(l.portID) (\(l.address):\(l.port)) removed")
            }
            var anaPorts = Set<UInt16>()
            for u in anaUpdates {
                let before = u.table.configuredGroups
                guard u.table.update(u.states) else { continue }
                anaPorts.insert(u.port.portID)
                for (g, state) in u.table.configuredGroups.sorted(by: { $0.key < $1.key }) where before[g] != state {
                    notes.append("port \(u.port.portID): ANA group \(g) is now \(state.name)")
                }
            }
            let oldGroups = Dictionary(old.subsystems.flatMap { s in s.namespaces.map { ("\(s.nqn)/\($0.nsid)", $0.anaGroupID) } },
                                       uniquingKeysWith: { a, _ in a })
            let regrouped = new.subsystems.contains { s in
                s.namespaces.contains { ns in oldGroups["\(s.nqn)/\(ns.nsid)"].map { $0 != ns.anaGroupID } ?? false }
            }
            if old.discoveryNQN != new.discoveryNQN { notes.append("discovery NQN is now \(new.discoveryNQN ?? NQN.discovery)") }
            let ended = target.replaceTopology(Target.Topology(subsystems: subsystems, ports: listeners.map(\.1),
                                                               discoveryNQN: new.discoveryNQN))
            for c in ended {
                notes.append("controller \(c.id) of \(c.hostNQN) on \(c.subsystem.nqn) disconnected: the new configuration no longer admits it")
            }
            if !ended.isEmpty { closeEndedControllers() }
            if regrouped { target.anaChanged(portIDs: nil) } else if !anaPorts.isEmpty { target.anaChanged(portIDs: anaPorts) }
            installListeners(listeners)
            state.listeners = listeners.map(\.0)
            state.config = new
            for n in notes { logger.notice("configuration: \(n)") }
            return notes
        }
    }

    static func identity(_ spec: TargetConfig.SubsystemSpec) -> Subsystem.Identity {
        var id = Subsystem.Identity(serial: spec.serial, model: spec.model)
        id.firmware = spec.firmware
        id.version = spec.version
        id.controllerIDs = spec.controllerIDs
        id.maxIOQueues = spec.maxIOQueues
        id.maxControllers = spec.maxControllers
        return id
    }

    static func port(_ l: TargetConfig.Listener, boundPort: UInt16) -> Port {
        var p = Port(id: l.portID, address: l.address, serviceID: String(boundPort), isIPv6: l.isIPv6, subsystemNQNs: l.subsystems)
        p.inlineDataSize = l.inlineDataSize
        p.maxQueueSize = l.maxQueueSize
        p.referrals = l.referrals.map { Referral(name: $0.name, portID: $0.portID, address: $0.address, serviceID: String($0.port), isIPv6: $0.isIPv6) }
        return p
    }

    /// Opens the backend of one configured namespace. Errors name the namespace and its path.
    static func openNamespace(_ ns: TargetConfig.NamespaceSpec, subsystem: String, stateDirectory: String?,
                              tmpfsIO: FileMappingMode = .mapped, pageCacheReads: FileMappingMode = .mapped, logger: Logger,
                              reservations: ReservationState? = nil, opener: BackendOpener? = nil) throws -> Namespace {
        let storage: StorageNamespace
        var label = ns.path
        do {
            if let custom = try opener?(ns) {
                storage = StorageNamespace(custom)
            } else {
                switch ns.backend {
                case .file:
                    storage = StorageNamespace(try FileBackend(path: ns.path, readOnly: ns.readOnly, directIO: ns.directIO,
                                                               blockSize: ns.blockSize, mapsTmpfsFiles: tmpfsIO == .mapped,
                                                               mapsPageCache: pageCacheReads == .mapped))
                case .memory:
                    storage = StorageNamespace(try MemoryBackend(bytes: ns.size, blockSize: ns.blockSize, readOnly: ns.readOnly))
                    label = "memory:\(ns.size)"
                case .null:
                    storage = StorageNamespace(NullBackend(bytes: ns.size, blockSize: ns.blockSize, readOnly: ns.readOnly))
                    label = "null:\(ns.size)"
                case .clone:
                    let nguid = UUIDText.format(ns.nguid, dashes: false)
                    guard let directory = ns.overlayDirectory ?? stateDirectory.map({ "\($0)/clones/\(nguid)" }) else {
                        throw ServerError(message: "clone overlays need device.overlay_dir or a writable --state-dir")
                    }
                    let base = try CloneBase(path: ns.path, blockSize: ns.blockSize, identity: nguid,
                                             mapsTmpfsFiles: tmpfsIO == .mapped, mapsPageCache: pageCacheReads == .mapped)
                    storage = StorageNamespace(clones: try CloneSet(base: base, directory: directory, nsid: ns.nsid))
                    label = "clone:\(ns.path) overlays in \(directory)"
                }
            }
        } catch {
            throw ServerError(message: "subsystem \(subsystem) namespace \(ns.nsid): device.path = \"\(ns.path)\": \(error)")
        }
        let backend = storage.store
        var metadata: Logger.Metadata = [
            "subsystem": "\(subsystem)", "nsid": "\(ns.nsid)", "backend": "\(label)",
            "blocks": "\(backend.blockCount)", "block_size": "\(1 << backend.blockSizeShift)", "readonly": "\(ns.readOnly)"]
        if let io = Self.dataPath(storage) { metadata["io"] = "\(io)" }
        logger.info("namespace ready", metadata: metadata)
        let state = reservations ?? ReservationState(
            persistencePath: stateDirectory.map { "\($0)/reservations-\(UUIDText.format(ns.nguid, dashes: false))" })
        return Namespace(nsid: ns.nsid, nguid: ns.nguid, uuid: ns.uuid, readOnly: ns.readOnly,
                         backend: storage, label: label, reservations: state,
                         visibleHosts: ns.visibleHosts.map(Set.init), anaGroupID: ns.anaGroupID, eui64: ns.eui64)
    }

    /// How a file namespace's data moves now (nil for other backends), for the log and
    /// `fathomctl namespace list`: "O_DIRECT", "buffered" (both on the ring), "tmpfs mapping
    /// (reads, writes)" or one of the two (`FileBackend.mapping`), "inline" (pread and pwrite
    /// on the reactor: ramfs, a sparse read-only tmpfs file, `--tmpfs-io copy`, or a mapping
    /// given up after the file shrank under it), "buffered, cached reads from the mapping (C of
    /// N MiB cached or holes, R reads)" (a file on a disk filesystem; C as of the last residency
    /// scan, R the Reads sent from the mapping so far).
    static func dataPath(_ storage: StorageNamespace) -> String? {
        guard let clones = storage.clones else { return dataPath(storage.store) }
        return dataPath(clones.base.file).map { "clone, base \($0)" }
    }

    static func dataPath(_ backend: BlockBackend) -> String? {
        guard let file = backend as? FileBackend else { return nil }
        if !file.completesInline {
            if file.usesDirectIO { return "O_DIRECT" }
            guard file.readsInPlace, let chunks = file.cachedChunks else { return "buffered" }
            return "buffered, cached reads from the mapping (\(chunks.cached) of \(chunks.total) MiB cached or holes, \(file.readsFromMapping) reads)"
        }
        let mapped = [file.readsInPlace ? "reads" : nil, file.writesInPlace ? "writes" : nil].compactMap { $0 }
        return mapped.isEmpty ? "inline" : "tmpfs mapping (\(mapped.joined(separator: ", ")))"
    }

    /// `dataPath` of namespace `nsid` of `subsystem` as it runs now.
    public func dataPath(subsystem: String, nsid: UInt32) -> String? {
        (target.subsystem(subsystem)?.namespace(nsid)?.backend as? StorageNamespace).flatMap { Self.dataPath($0) }
    }

    /// The clones of a clone namespace (fathomctl clone list/reset/delete).
    public func clones(subsystem: String, nsid: UInt32) -> CloneSet? {
        (target.subsystem(subsystem)?.namespace(nsid)?.backend as? StorageNamespace)?.clones
    }

    /// True when a file-backed namespace's backing file no longer has the size in use.
    static func sizeChanged(_ current: Namespace, _ spec: TargetConfig.NamespaceSpec) -> Bool {
        guard spec.backend == .file else { return false }
        var st = stat()
        guard stat(spec.path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG || (st.st_mode & S_IFMT) == S_IFBLK else { return false }
        if (st.st_mode & S_IFMT) == S_IFBLK {
            guard let bytes = FileBackend.deviceSize(path: spec.path) else { return false }
            return bytes >> UInt64(current.blockSizeShift) != current.blockCount
        }
        return UInt64(st.st_size) >> UInt64(current.blockSizeShift) != current.blockCount
    }
}
