import NVMeWire
import Synchronization

/// The whole target: subsystems, ports and live controllers. Connect, teardown and
/// configuration changes go through here under a lock (control path); the I/O path never
/// takes it.
public final class Target {
    public let settings: TargetSettings
    /// The well-known discovery subsystem (nqn.2014-08.org.nvmexpress.discovery).
    public let discovery: Subsystem
    private let state: Mutex<State>
    private let discoveryGeneration = Atomic<UInt64>(1)
    private let anaChanges = Atomic<UInt64>(1)

    /// What the operator configures: subsystems, ports (with referrals) and the optional
    /// unique discovery NQN. Replaced as a whole by `replaceTopology`.
    public struct Topology {
        public var subsystems: [Subsystem]
        public var ports: [Port]
        /// A unique discovery NQN served besides the well-known one (nvmet's discovery_nqn).
        public var discoveryNQN: String?

        public init(subsystems: [Subsystem], ports: [Port], discoveryNQN: String? = nil) {
            self.subsystems = subsystems
            self.ports = ports
            self.discoveryNQN = discoveryNQN
        }
    }

    struct State {
        var subsystems: [String: Subsystem]
        var ports: [UInt16: Port]
        var uniqueDiscovery: Subsystem?
        var controllers: [UInt16: Controller] = [:]
        /// Where the next controller ID search starts. IDs rotate through the range (as
        /// SPDK's next_cntlid) from a random start, so a restarted daemon is unlikely to
        /// hand a reconnecting host the ID its old controller had.
        var nextControllerID = UInt16.random(in: 1...0xFFEF)
        /// Per controller: I/O queue IDs already connected.
        var connectedQueues: [UInt16: Set<UInt16>] = [:]
    }

    public init(settings: TargetSettings, topology: Topology) {
        self.settings = settings
        self.discovery = Self.discoverySubsystem(NQN.discovery)
        state = Mutex(State(subsystems: Self.index(topology.subsystems), ports: Dictionary(topology.ports.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a }),
                            uniqueDiscovery: topology.discoveryNQN.map(Self.discoverySubsystem)))
    }

    public convenience init(settings: TargetSettings, subsystems: [Subsystem], ports: [Port]) {
        self.init(settings: settings, topology: Topology(subsystems: subsystems, ports: ports))
    }

    private static func discoverySubsystem(_ nqn: String) -> Subsystem {
        Subsystem(nqn: nqn, kind: .discovery, serial: "fathom-discovery", model: "Fathom Discovery",
                  allowAnyHost: true, allowedHosts: [], namespaces: [])
    }

    private static func index(_ list: [Subsystem]) -> [String: Subsystem] {
        Dictionary(list.map { ($0.nqn, $0) }, uniquingKeysWith: { a, _ in a })
    }

    public var subsystems: [String: Subsystem] { state.withLock { $0.subsystems } }
    public func subsystem(_ nqn: String) -> Subsystem? { state.withLock { $0.subsystems[nqn] } }
    public var ports: [Port] { state.withLock { $0.ports.values.sorted { $0.id < $1.id } } }
    public func port(_ id: UInt16) -> Port? { state.withLock { $0.ports[id] } }
    /// The discovery NQN hosts see in the discovery log (the unique one when configured).
    public var discoveryNQN: String { state.withLock { $0.uniqueDiscovery?.nqn ?? NQN.discovery } }

    public var controllerCount: Int { state.withLock { $0.controllers.count } }
    public func controller(_ id: UInt16) -> Controller? { state.withLock { $0.controllers[id] } }
    public var liveControllers: [Controller] { state.withLock { Array($0.controllers.values) } }
    /// I/O queues connected per controller ID.
    public func connectedIOQueues(of id: UInt16) -> Int { state.withLock { $0.connectedQueues[id]?.count ?? 0 } }

    /// Executes a Connect. `data` is the 1024-byte Connect data the host sent in-capsule.
    public func connect(_ sqe: SubmissionQueueEntry, data: UnsafeRawBufferPointer, port: Port, peer: String) -> ConnectOutcome {
        guard sqe.connectRecordFormat == 0 else { return .rejected(.connectIncompatibleFormat, dw0: 0) }
        guard data.count >= 1024, let p = data.baseAddress else {
            return .rejected(.dataSGLLengthInvalid, dw0: 0)
        }
        let request = ConnectData(decoding: p)
        let qid = sqe.connectQueueID
        let sqsize = Int(sqe.connectSQSize)
        // IATTR (bit 16) says the bad parameter is in the data; IPO is its byte offset.
        func invalidData(_ offset: UInt32) -> ConnectOutcome { .rejected(.connectInvalidParameters, dw0: 1 << 16 | offset) }
        func invalidSQE(_ offset: UInt32) -> ConnectOutcome { .rejected(.connectInvalidParameters, dw0: offset) }

        guard sqsize >= 1 else { return invalidSQE(44) }
        // An empty HOSTNQN is an anonymous host, as nvmet and SPDK take it: spdk_nvme_perf sends
        // none unless told one. Only subsystems open to any host admit it (`allows(host:)`).
        if NQN.problem(request.hostNQN) != nil, request.hostNQN != NQN.discovery, !request.hostNQN.isEmpty { return invalidData(512) }
        return state.withLock { st -> ConnectOutcome in
            // The port as configured now (its subsystem list may have changed since accept).
            guard let current = st.ports[port.id], current.sameEndpoint(as: port) else { return invalidData(256) }
            let subsystem: Subsystem
            if request.subsystemNQN == NQN.discovery {
                subsystem = discovery
            } else if let unique = st.uniqueDiscovery, request.subsystemNQN == unique.nqn {
                subsystem = unique
            } else if let s = st.subsystems[request.subsystemNQN], current.subsystemNQNs.contains(s.nqn) {
                subsystem = s
            } else {
                return invalidData(256)
            }
            guard subsystem.allows(host: request.hostNQN) else { return .rejected(.connectInvalidHost, dw0: 1 << 16 | 512) }
            // Limits: one host cannot take every connection, one subsystem every controller.
            if request.hostNQN != NQN.discovery {
                let queues = st.controllers.values.reduce(0) { n, c in
                    c.hostNQN == request.hostNQN ? n + 1 + (st.connectedQueues[c.id]?.count ?? 0) : n
                }
                guard queues < settings.maxQueuesPerHost else { return .rejected(.connectControllerBusy, dw0: 0) }
            }
            if qid == 0 && subsystem.kind == .nvm {
                let limit = min(subsystem.identity.maxControllers ?? settings.maxControllersPerSubsystem, settings.maxControllersPerSubsystem)
                guard st.controllers.values.filter({ $0.subsystem === subsystem }).count < limit else {
                    return .rejected(.connectControllerBusy, dw0: 0)
                }
            }
            if qid == 0 {
                guard request.controllerID == 0xFFFF else { return invalidData(16) }
                guard sqsize < 4096 else { return invalidSQE(44) }
                var kato = sqe.connectKeepAliveTimeout
                if subsystem.kind == .discovery && kato == 0 { kato = settings.discoveryDefaultKeepAliveMs }
                guard let id = Self.freeControllerID(in: subsystem.identity.controllerIDs, &st) else {
                    return .rejected(.connectControllerBusy, dw0: 0)
                }
                let ctrl = Controller(id: id, subsystem: subsystem, hostNQN: request.hostNQN, hostID: request.hostID,
                                      port: current, peer: peer, keepAliveMs: kato, settings: settings)
                st.controllers[id] = ctrl
                st.connectedQueues[id] = []
                return .admin(ctrl, sqsize: sqsize + 1)
            }
            guard let ctrl = st.controllers[request.controllerID], !ctrl.isDead,
                  ctrl.subsystem === subsystem, ctrl.hostNQN == request.hostNQN else {
                return invalidData(16)
            }
            guard ctrl.isReady, !ctrl.isDiscovery else { return .rejected(.commandSequenceError, dw0: 0) }
            guard Int(qid) <= ctrl.grantedIOQueues.load(ordering: .relaxed), !(st.connectedQueues[ctrl.id]?.contains(qid) ?? true) else {
                return invalidSQE(42)
            }
            guard sqsize < ctrl.maxQueueEntries else { return invalidSQE(44) }
            st.connectedQueues[ctrl.id]?.insert(qid)
            return .io(ctrl, sqsize: sqsize + 1)
        }
    }

    /// A controller ID in `range` no live controller uses. IDs are unique target-wide (I/O
    /// Connect finds its controller by ID), so subsystems with overlapping ranges share them.
    private static func freeControllerID(in range: ClosedRange<UInt16>, _ st: inout State) -> UInt16? {
        guard st.controllers.count < 0xFFEF else { return nil }
        let size = Int(range.upperBound - range.lowerBound) + 1
        let start = range.contains(st.nextControllerID) ? Int(st.nextControllerID - range.lowerBound) : 0
        for k in 0..<size {
            let id = range.lowerBound + UInt16((start + k) % size)
            if st.controllers[id] == nil {
                st.nextControllerID = id == range.upperBound ? range.lowerBound : id + 1
                return id
            }
        }
        return nil
    }

    /// Forgets an I/O queue (its connection closed) so the host may connect it again.
    public func releaseQueue(_ qid: UInt16, of controller: Controller) {
        state.withLock { _ = $0.connectedQueues[controller.id]?.remove(qid) }
    }

    /// Removes a controller whose admin queue is gone. Its I/O queues see `isDead`.
    public func remove(_ controller: Controller) {
        controller.fail()
        state.withLock {
            if $0.controllers[controller.id] === controller {
                $0.controllers[controller.id] = nil
                $0.connectedQueues[controller.id] = nil
            }
        }
    }

    /// Installs a new topology (a reload or a control request) and ends every controller
    /// the new one no longer admits: its subsystem is gone or was recreated, its host lost
    /// access, or its port no longer exists or no longer carries the subsystem (nvmet ends
    /// those too when a port link is removed). Controllers it still admits are untouched.
    /// Discovery controllers get a Discovery Log Page Change event when what a discovery
    /// log can show changed. Returns the ended controllers.
    @discardableResult
    public func replaceTopology(_ topology: Topology) -> [Controller] {
        let (ended, discoveryChanged, discoveryControllers) = state.withLock { st -> ([Controller], Bool, [Controller]) in
            let before = DiscoveryView(st)
            st.subsystems = Self.index(topology.subsystems)
            st.ports = Dictionary(topology.ports.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
            if st.uniqueDiscovery?.nqn != topology.discoveryNQN {
                st.uniqueDiscovery = topology.discoveryNQN.map(Self.discoverySubsystem)
            }
            var ended: [Controller] = []
            for ctrl in st.controllers.values where !Self.admits(st, ctrl) { ended.append(ctrl) }
            for ctrl in ended {
                ctrl.fail()
                st.controllers[ctrl.id] = nil
                st.connectedQueues[ctrl.id] = nil
            }
            return (ended, DiscoveryView(st) != before, st.controllers.values.filter(\.isDiscovery))
        }
        if discoveryChanged {
            discoveryGeneration.add(1, ordering: .relaxed)
            for c in discoveryControllers { c.discoveryLogChanged() }
        }
        return ended
    }

    private static func admits(_ st: State, _ ctrl: Controller) -> Bool {
        guard let port = st.ports[ctrl.port.id], port.sameEndpoint(as: ctrl.port) else { return false }
        if ctrl.isDiscovery { return ctrl.subsystem.nqn == NQN.discovery || ctrl.subsystem === st.uniqueDiscovery }
        guard st.subsystems[ctrl.subsystem.nqn] === ctrl.subsystem, port.subsystemNQNs.contains(ctrl.subsystem.nqn) else { return false }
        return ctrl.subsystem.allows(host: ctrl.hostNQN)
    }

    /// Everything a discovery log page is built from, to tell whether it changed.
    private struct DiscoveryView: Equatable {
        var ports: [Port]
        var access: [String: [String]]
        var discoveryNQN: String?
        init(_ st: State) {
            ports = st.ports.values.sorted { $0.id < $1.id }
            access = st.subsystems.mapValues { $0.allowAnyHost ? ["*"] : $0.allowedHosts.sorted() }
            discoveryNQN = st.uniqueDiscovery?.nqn
        }
    }

    /// The ANA log's change count (bumped by `anaChanged`).
    public var anaChangeCount: UInt64 { anaChanges.load(ordering: .relaxed) }

    /// ANA states or group membership changed: bump the change count and notify the I/O
    /// controllers connected through `portIDs` (nil: through any port).
    public func anaChanged(portIDs: Set<UInt16>?) {
        anaChanges.add(1, ordering: .relaxed)
        for c in liveControllers where !c.isDiscovery && (portIDs?.contains(c.port.id) ?? true) { c.anaChanged() }
    }

    /// The ANA log of one controller: every group in use on some port (group 1 always),
    /// with its state through the controller's port and the NSIDs its host may see.
    public func anaReport(for controller: Controller) -> [ANAGroupReport] {
        var groups: Set<UInt32> = [1]
        for p in ports { groups.formUnion(p.ana.configuredGroups.keys) }
        let namespaces = controller.visibleNamespaces
        let count = anaChangeCount
        return groups.sorted().map { g in
            ANAGroupReport(groupID: g, state: controller.port.ana.state(g), changeCount: count,
                           namespaceIDs: namespaces.filter { $0.anaGroupID == g }.map(\.nsid))
        }
    }

    /// Tells every controller of `subsystem` that `nsids` changed (see `Controller.namespacesChanged`).
    public func namespacesChanged(in subsystem: Subsystem, _ nsids: [UInt32]) {
        guard !nsids.isEmpty else { return }
        for c in liveControllers where c.subsystem === subsystem { c.namespacesChanged(nsids) }
    }

    /// Releases namespace sets replaced more than a grace period ago.
    public func reclaim(nowMs: Int64) {
        for s in subsystems.values { s.reclaim(nowMs: nowMs) }
    }

    /// The discovery log a host sees through port `portID`: every subsystem on the port that
    /// lets it in (on a discovery-only port: on every port), the port's referrals, then the
    /// discovery subsystem itself. A wildcard listen address is replaced by the address the
    /// host actually reached (never 0.0.0.0).
    public func discoveryLog(hostNQN: String, portID: UInt16, localAddress: String) -> (generation: UInt64, entries: [DiscoveryLogEntry]) {
        state.withLock { st in
            let generation = discoveryGeneration.load(ordering: .relaxed)
            guard let here = st.ports[portID] else { return (generation, []) }
            func address(_ p: Port) -> String { p.isWildcard ? localAddress : p.address }
            var entries: [DiscoveryLogEntry] = []
            let sources = here.isDiscoveryOnly ? st.ports.values.sorted { $0.id < $1.id } : [here]
            for p in sources {
                for nqn in p.subsystemNQNs {
                    guard let s = st.subsystems[nqn], s.allows(host: hostNQN) else { continue }
                    entries.append(DiscoveryLogEntry(subsystemType: .nvm, portID: p.id, isIPv6: p.isIPv6, address: address(p),
                                                     serviceID: p.serviceID, subsystemNQN: nqn))
                }
            }
            for r in here.referrals {
                entries.append(DiscoveryLogEntry(subsystemType: .referral, portID: r.portID, isIPv6: r.isIPv6, address: r.address,
                                                 serviceID: r.serviceID, subsystemNQN: NQN.discovery))
            }
            entries.append(DiscoveryLogEntry(subsystemType: .currentDiscovery, portID: here.id, isIPv6: here.isIPv6,
                                             address: address(here), serviceID: here.serviceID,
                                             subsystemNQN: st.uniqueDiscovery?.nqn ?? NQN.discovery))
            return (generation, entries)
        }
    }
}

/// The outcome of Connect.
public enum ConnectOutcome {
    case admin(Controller, sqsize: Int)
    case io(Controller, sqsize: Int)
    case rejected(NVMeStatus, dw0: UInt32)
}

/// The Connect command's 1024-byte data (libnvme's `struct nvmf_connect_data`).
public struct ConnectData: Sendable {
    public var hostID: [UInt8]
    public var controllerID: UInt16
    public var subsystemNQN: String
    public var hostNQN: String

    public init(decoding p: UnsafeRawPointer) {
        hostID = Array(UnsafeRawBufferPointer(start: p, count: 16))
        controllerID = p.le16(16)
        subsystemNQN = p.ascii(256, width: NQN.fieldWidth)
        hostNQN = p.ascii(512, width: NQN.fieldWidth)
    }
}
