import Synchronization

/// An immutable set of namespaces, indexed by NSID for the I/O path.
public final class NamespaceSet {
    public let list: [Namespace]
    let table: [Namespace?]
    /// Unique for the process's life (never reused, unlike the object's address): what a
    /// `VisibilityCache` remembers its answers against.
    let generation: UInt64
    private static let generations = Atomic<UInt64>(0)

    public init(_ namespaces: [Namespace]) {
        generation = Self.generations.wrappingAdd(1, ordering: .relaxed).newValue
        list = namespaces.sorted { $0.nsid < $1.nsid }
        var table = [Namespace?](repeating: nil, count: Int(namespaces.map(\.nsid).max() ?? 0) + 1)
        for ns in namespaces { table[Int(ns.nsid)] = ns }
        self.table = table
    }

    @inline(__always)
    public func namespace(_ nsid: UInt32) -> Namespace? {
        let i = Int(nsid)
        return i < table.count ? table[i] : nil
    }
}

/// The current namespace set of a subsystem, replaced whole on hot add, remove or resize.
///
/// Readers (every I/O command, on every reactor) take no lock: they load a pointer with
/// acquire ordering. A replaced set is kept alive for a grace period (`retire`), far longer
/// than any reader holds it (the span of decoding one command), then released — the
/// read-copy-update pattern, with time as the grace period.
final class NamespaceSnapshot {
    private let current: Atomic<UInt>
    private let retired = Mutex<[(set: NamespaceSet, atMs: Int64)]>([])
    static let graceMs: Int64 = 10_000

    init(_ set: NamespaceSet) {
        current = Atomic(UInt(bitPattern: Unmanaged.passRetained(set).toOpaque()))
    }

    deinit {
        Unmanaged<NamespaceSet>.fromOpaque(UnsafeRawPointer(bitPattern: current.load(ordering: .acquiring))!).release()
    }

    /// Runs `body` on the current set without retaining it (a lookup per I/O command).
    @inline(__always)
    func withSet<R>(_ body: (NamespaceSet) -> R) -> R {
        Unmanaged<NamespaceSet>.fromOpaque(UnsafeRawPointer(bitPattern: current.load(ordering: .acquiring))!)._withUnsafeGuaranteedRef(body)
    }

    @inline(__always)
    var set: NamespaceSet {
        Unmanaged<NamespaceSet>.fromOpaque(UnsafeRawPointer(bitPattern: current.load(ordering: .acquiring))!).takeUnretainedValue()
    }

    /// Publishes `new`; the old set is released after the grace period.
    func replace(with new: NamespaceSet, nowMs: Int64) {
        let newBits = UInt(bitPattern: Unmanaged.passRetained(new).toOpaque())
        let oldBits = current.exchange(newBits, ordering: .acquiringAndReleasing)
        let old = Unmanaged<NamespaceSet>.fromOpaque(UnsafeRawPointer(bitPattern: oldBits)!).takeRetainedValue()
        retired.withLock { $0.append((old, nowMs)) }
    }

    /// Releases sets retired more than the grace period ago.
    func reclaim(nowMs: Int64) {
        retired.withLock { $0.removeAll { nowMs - $0.atMs > Self.graceMs } }
    }
}

/// Which masked namespaces (`allowed_hosts`) an I/O queue's host was found to see, so the
/// host's NQN is hashed once per namespace and queue, not on every command. The answers hold
/// for one namespace set: any replacement (hot add, remove, resize, new masks) makes new
/// Namespace objects and a new generation, which empties the cache.
public struct VisibilityCache {
    var generation: UInt64 = 0
    /// Bit n: NSID n (below 64) is visible. Larger NSIDs are always checked.
    var visible: UInt64 = 0
    public init() {}
}
