import NVMeWire
import Synchronization

/// The whole target: subsystems, ports and live controllers. Connect and teardown go
/// through here under a lock (control path); the I/O path never takes it.
public final class Target {
    public let settings: TargetSettings
    public let subsystems: [String: Subsystem]
    public let ports: [Port]
    public let discovery: Subsystem
    private let state = Mutex(State())

    struct State {
        var controllers: [UInt16: Controller] = [:]
        var nextControllerID: UInt16 = 1
        /// Per controller: I/O queue IDs already connected.
        var connectedQueues: [UInt16: Set<UInt16>] = [:]
    }

    public init(settings: TargetSettings, subsystems: [Subsystem], ports: [Port]) {
        self.settings = settings
        self.subsystems = Dictionary(subsystems.map { ($0.nqn, $0) }, uniquingKeysWith: { a, _ in a })
        self.ports = ports
        self.discovery = Subsystem(nqn: NQN.discovery, kind: .discovery, serial: "fathom-discovery", model: "Fathom Discovery",
                                   allowAnyHost: true, allowedHosts: [], namespaces: [])
    }

    public var controllerCount: Int { state.withLock { $0.controllers.count } }
    public func controller(_ id: UInt16) -> Controller? { state.withLock { $0.controllers[id] } }
    public var liveControllers: [Controller] { state.withLock { Array($0.controllers.values) } }

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
        if let problem = NQN.problem(request.hostNQN), request.hostNQN != NQN.discovery {
            _ = problem
            return invalidData(512)
        }
        let subsystem: Subsystem
        if request.subsystemNQN == NQN.discovery {
            subsystem = discovery
        } else if let s = subsystems[request.subsystemNQN], port.subsystemNQNs.contains(s.nqn) {
            subsystem = s
        } else {
            return invalidData(256)
        }
        guard subsystem.allows(host: request.hostNQN) else { return .rejected(.connectInvalidHost, dw0: 1 << 16 | 512) }

        if qid == 0 {
            guard request.controllerID == 0xFFFF else { return invalidData(16) }
            guard sqsize < 4096 else { return invalidSQE(44) }
            var kato = sqe.connectKeepAliveTimeout
            if subsystem.kind == .discovery && kato == 0 { kato = settings.discoveryDefaultKeepAliveMs }
            return state.withLock { st -> ConnectOutcome in
                guard st.controllers.count < 0xFFEF else { return .rejected(.connectControllerBusy, dw0: 0) }
                var id = st.nextControllerID
                while st.controllers[id] != nil || id == 0 || id >= 0xFFF0 { id = id >= 0xFFEF ? 1 : id + 1 }
                st.nextControllerID = id >= 0xFFEF ? 1 : id + 1
                let ctrl = Controller(id: id, subsystem: subsystem, hostNQN: request.hostNQN, hostID: request.hostID,
                                      port: port, peer: peer, keepAliveMs: kato, settings: settings)
                st.controllers[id] = ctrl
                st.connectedQueues[id] = []
                return .admin(ctrl, sqsize: sqsize + 1)
            }
        }
        return state.withLock { st -> ConnectOutcome in
            guard let ctrl = st.controllers[request.controllerID], !ctrl.isDead,
                  ctrl.subsystem === subsystem, ctrl.hostNQN == request.hostNQN else {
                return invalidData(16)
            }
            guard ctrl.isReady, !ctrl.isDiscovery else { return .rejected(.commandSequenceError, dw0: 0) }
            guard Int(qid) <= ctrl.grantedIOQueues.load(ordering: .relaxed), !(st.connectedQueues[ctrl.id]?.contains(qid) ?? true) else {
                return invalidSQE(42)
            }
            guard sqsize < settings.maxQueueEntries else { return invalidSQE(44) }
            st.connectedQueues[ctrl.id]?.insert(qid)
            return .io(ctrl, sqsize: sqsize + 1)
        }
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

    /// Tells every controller of `subsystem` that `nsids` changed (see `Controller.namespacesChanged`).
    public func namespacesChanged(in subsystem: Subsystem, _ nsids: [UInt32]) {
        guard !nsids.isEmpty else { return }
        for c in liveControllers where c.subsystem === subsystem { c.namespacesChanged(nsids) }
    }

    /// Releases namespace sets replaced more than a grace period ago.
    public func reclaim(nowMs: Int64) {
        for s in subsystems.values { s.reclaim(nowMs: nowMs) }
    }

    /// Discovery log records a host sees through `port`: every subsystem on the port that
    /// lets it in, then the port's own discovery subsystem. A wildcard listen address is
    /// replaced by the address the host actually reached (never 0.0.0.0).
    public func discoveryEntries(hostNQN: String, port: Port, localAddress: String) -> [DiscoveryLogEntry] {
        let wildcard = port.address == "0.0.0.0" || port.address == "::" || port.address.isEmpty
        let address = wildcard ? localAddress : port.address
        var entries: [DiscoveryLogEntry] = []
        for nqn in port.subsystemNQNs {
            guard let s = subsystems[nqn], s.allows(host: hostNQN) else { continue }
            entries.append(DiscoveryLogEntry(subsystemType: .nvm, portID: port.id, isIPv6: port.isIPv6, address: address,
                                             serviceID: port.serviceID, subsystemNQN: nqn))
        }
        entries.append(DiscoveryLogEntry(subsystemType: .currentDiscovery, portID: port.id, isIPv6: port.isIPv6,
                                         address: address, serviceID: port.serviceID, subsystemNQN: NQN.discovery))
        return entries
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
