/// A listening address and what is reachable through it (nvmetcli's "ports"): its
/// subsystems, its transport parameters and the referrals its discovery log lists.
public struct Port: Sendable, Equatable {
    /// Equal when everything a discovery log or a Connect depends on is equal (ANA states
    /// are live state, compared by the caller that changes them).
    public static func == (a: Port, b: Port) -> Bool {
        a.id == b.id && a.address == b.address && a.serviceID == b.serviceID && a.isIPv6 == b.isIPv6
            && a.subsystemNQNs == b.subsystemNQNs && a.inlineDataSize == b.inlineDataSize && a.maxQueueSize == b.maxQueueSize
            && a.referrals == b.referrals
    }

    public var id: UInt16
    public var address: String
    public var serviceID: String
    public var isIPv6: Bool
    public var subsystemNQNs: [String]
    /// In-capsule data accepted on I/O queues (nvmet's param_inline_data_size; nil: target default).
    public var inlineDataSize: Int? = nil
    /// Entries per I/O queue (nvmet's param_max_queue_size; nil: target default).
    public var maxQueueSize: Int? = nil
    /// Other discovery controllers this port's discovery log points hosts to.
    public var referrals: [Referral] = []
    /// ANA group states through this port (shared with its controllers; see `ANAStates`).
    public var ana = ANAStates()

    public init(id: UInt16, address: String, serviceID: String, isIPv6: Bool, subsystemNQNs: [String]) {
        self.id = id
        self.address = address
        self.serviceID = serviceID
        self.isIPv6 = isIPv6
        self.subsystemNQNs = subsystemNQNs
    }

    /// True for a port that serves discovery only (8009 by convention): its discovery log
    /// lists the subsystems of every port, since it has none of its own.
    public var isDiscoveryOnly: Bool { subsystemNQNs.isEmpty }

    /// A listen address that means "every interface".
    public var isWildcard: Bool { address == "0.0.0.0" || address == "::" || address.isEmpty }

    /// True when `other` is reached through the same socket address.
    public func sameEndpoint(as other: Port) -> Bool {
        address == other.address && serviceID == other.serviceID && isIPv6 == other.isIPv6
    }
}

/// A discovery log entry of subtype "referral": another discovery service.
public struct Referral: Sendable, Equatable {
    public var name: String
    public var portID: UInt16
    public var address: String
    public var serviceID: String
    public var isIPv6: Bool

    public init(name: String, portID: UInt16, address: String, serviceID: String, isIPv6: Bool) {
        self.name = name
        self.portID = portID
        self.address = address
        self.serviceID = serviceID
        self.isIPv6 = isIPv6
    }
}
