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
    /// Namespaces indexed by NSID for the I/O path; `nil` holes for unused NSIDs.
    public let namespaceTable: [Namespace?]
    public let namespaces: [Namespace]

    public init(nqn: String, kind: Kind = .nvm, serial: String, model: String, allowAnyHost: Bool,
                allowedHosts: Set<String>, namespaces: [Namespace]) {
        self.nqn = nqn
        self.kind = kind
        self.serial = serial
        self.model = model
        self.allowAnyHost = allowAnyHost
        self.allowedHosts = allowedHosts
        self.namespaces = namespaces.sorted { $0.nsid < $1.nsid }
        var table = [Namespace?](repeating: nil, count: Int(namespaces.map(\.nsid).max() ?? 0) + 1)
        for ns in namespaces { table[Int(ns.nsid)] = ns }
        self.namespaceTable = table
    }

    public func allows(host: String) -> Bool { kind == .discovery || allowAnyHost || allowedHosts.contains(host) }

    /// Highest NSID in use, which Identify Controller reports as NN.
    public var maxNamespaceID: UInt32 { UInt32(max(namespaceTable.count - 1, 0)) }

    @inline(__always)
    public func namespace(_ nsid: UInt32) -> Namespace? {
        let i = Int(nsid)
        return i < namespaceTable.count ? namespaceTable[i] : nil
    }
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
