import NVMeWire
import Synchronization

/// An NVM subsystem (or the discovery subsystem): its identity, who may connect, and its
/// namespaces.
///
/// Identity is fixed for the object's life: a host caches serial, model and controller IDs,
/// so changing them means a new `Subsystem` (the old one's controllers are disconnected).
/// Host access can change while hosts are connected (`setAccess`), and so can namespaces.
public final class Subsystem {
    public enum Kind: Sendable { case nvm, discovery }

    /// What the operator may set per subsystem (nvmetcli's subsystem `attr`).
    public struct Identity: Sendable, Equatable {
        public var serial: String
        public var model: String
        /// Firmware revision reported in Identify (nil: the target's).
        public var firmware: String? = nil
        /// NVMe version reported in VS and Identify.
        public var version: UInt32 = 0x0001_0300
        /// Controller IDs this subsystem hands out (nvmet's cntlid_min/cntlid_max).
        public var controllerIDs: ClosedRange<UInt16> = 1...0xFFEF
        /// Most I/O queues per controller (nvmet's qid_max; nil: the target's limit).
        public var maxIOQueues: Int? = nil
        /// Most controllers at once (Fathom's max_controllers; nil: the target's limit).
        public var maxControllers: Int? = nil

        public init(serial: String, model: String) {
            self.serial = serial
            self.model = model
        }
    }

    struct Access {
        var allowAnyHost: Bool
        var allowedHosts: Set<String>
    }

    public let nqn: String
    public let kind: Kind
    public let identity: Identity
    public var serial: String { identity.serial }
    public var model: String { identity.model }
    private let access: Mutex<Access>
    private let snapshot: NamespaceSnapshot

    public init(nqn: String, kind: Kind = .nvm, identity: Identity, allowAnyHost: Bool,
                allowedHosts: Set<String>, namespaces: [Namespace]) {
        self.nqn = nqn
        self.kind = kind
        self.identity = identity
        self.access = Mutex(Access(allowAnyHost: allowAnyHost, allowedHosts: allowedHosts))
        self.snapshot = NamespaceSnapshot(NamespaceSet(namespaces))
    }

    public convenience init(nqn: String, kind: Kind = .nvm, serial: String, model: String, allowAnyHost: Bool,
                            allowedHosts: Set<String>, namespaces: [Namespace]) {
        self.init(nqn: nqn, kind: kind, identity: Identity(serial: serial, model: model), allowAnyHost: allowAnyHost,
                  allowedHosts: allowedHosts, namespaces: namespaces)
    }

    /// The namespaces now, in NSID order.
    public var namespaces: [Namespace] { snapshot.set.list }

    public var allowAnyHost: Bool { access.withLock { $0.allowAnyHost } }
    public var allowedHosts: Set<String> { access.withLock { $0.allowedHosts } }

    /// Checked at Connect (control path) and when access changes.
    public func allows(host: String) -> Bool {
        kind == .discovery || access.withLock { $0.allowAnyHost || $0.allowedHosts.contains(host) }
    }

    /// Changes who may connect. Controllers of hosts no longer allowed are the caller's to
    /// end (`Target.replaceTopology` does).
    public func setAccess(allowAnyHost: Bool, allowedHosts: Set<String>) {
        access.withLock { $0 = Access(allowAnyHost: allowAnyHost, allowedHosts: allowedHosts) }
    }

    /// The most namespaces a subsystem may have; Identify Controller reports it as NN, so
    /// hot-added namespaces up to it need no reconnect.
    public static let maxNamespaces: UInt32 = 1024

    @inline(__always)
    public func namespace(_ nsid: UInt32) -> Namespace? { snapshot.withSet { $0.namespace(nsid) } }

    /// Namespace `nsid` if `host` may see it, answering masked namespaces from `cache` once a
    /// queue has checked them against the current set.
    @inline(__always)
    public func namespace(_ nsid: UInt32, visibleTo host: __shared String, cache: inout VisibilityCache) -> Namespace? {
        snapshot.withSet { set -> Namespace? in
            guard let ns = set.namespace(nsid) else { return nil }
            guard ns.visibleHosts != nil else { return ns }
            let bit: UInt64 = nsid < 64 ? 1 << UInt64(nsid) : 0
            if cache.generation == set.generation && cache.visible & bit != 0 { return ns }
            guard ns.isVisible(to: host) else { return nil }
            if cache.generation != set.generation {
                cache.generation = set.generation
                cache.visible = 0
            }
            cache.visible |= bit
            return ns
        }
    }

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
