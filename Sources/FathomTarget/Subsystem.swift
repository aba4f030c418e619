import NVMeWire

/// An NVM subsystem (or the discovery subsystem): its identity, who may connect, and its
/// namespaces.
public final class Subsystem {
    public enum Kind: Sendable { case nvm, discovery }

    public let nqn: String
    public let kind: Kind
    public let serial: String
    public let model: String
    public let allowAnyHost: Bool
    public let allowedHosts: Set<String>
    private let snapshot: NamespaceSnapshot

    public init(nqn: String, kind: Kind = .nvm, serial: String, model: String, allowAnyHost: Bool,
                allowedHosts: Set<String>, namespaces: [Namespace]) {
        self.nqn = nqn
        self.kind = kind
        self.serial = serial
        self.model = model
        self.allowAnyHost = allowAnyHost
        self.allowedHosts = allowedHosts
        self.snapshot = NamespaceSnapshot(NamespaceSet(namespaces))
    }

    /// The namespaces now, in NSID order.
    public var namespaces: [Namespace] { snapshot.set.list }

    public func allows(host: String) -> Bool { kind == .discovery || allowAnyHost || allowedHosts.contains(host) }

    /// The most namespaces a subsystem may have; Identify Controller reports it as NN, so
    /// hot-added namespaces up to it need no reconnect.
    public static let maxNamespaces: UInt32 = 1024

    @inline(__always)
    public func namespace(_ nsid: UInt32) -> Namespace? { snapshot.set.namespace(nsid) }

    /// Replaces the namespace set (hot add, remove, resize) and returns the NSIDs whose
    /// attributes changed: added, removed, or replaced by a different object.
    @discardableResult
    public func replaceNamespaces(_ new: [Namespace], nowMs: Int64 = MonotonicClock.nowMs()) -> [UInt32] {
        let old = snapshot.set
        let next = NamespaceSet(new)
        var changed: [UInt32] = []
        for ns in old.list where next.namespace(ns.nsid) !== ns { changed.append(ns.nsid) }
        for ns in next.list where old.namespace(ns.nsid) == nil { changed.append(ns.nsid) }
        snapshot.replace(with: next, nowMs: nowMs)
        return changed.sorted()
    }

    func reclaim(nowMs: Int64) { snapshot.reclaim(nowMs: nowMs) }
}

/// A listening address and the subsystems reachable through it (nvmetcli's "ports").
public struct Port: Sendable {
    public var id: UInt16
    public var address: String
    public var serviceID: String
    public var isIPv6: Bool
    public var subsystemNQNs: [String]

    public init(id: UInt16, address: String, serviceID: String, isIPv6: Bool, subsystemNQNs: [String]) {
        self.id = id
        self.address = address
        self.serviceID = serviceID
        self.isIPv6 = isIPv6
        self.subsystemNQNs = subsystemNQNs
    }
}
