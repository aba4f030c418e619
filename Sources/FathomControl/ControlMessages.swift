import FoundationEssentials

/// One request to the daemon's control socket: a command and its arguments. Every
/// argument is optional so one flat type carries all commands (what each needs is checked
/// by the service, which names a missing one).
public struct ControlRequest: Codable, Sendable, Equatable {
    /// "status", "subsystem.add", "namespace.resize", "host.deny", "save", ...
    public var command: String
    public var subsystem: String?
    public var nsid: UInt32?
    public var path: String?
    /// "file" (default), "memory" or "null".
    public var backend: String?
    /// Bytes, or with a K/M/G/T suffix.
    public var size: String?
    public var readonly: Bool?
    public var uuid: String?
    public var nguid: String?
    /// A host NQN (host allow/deny).
    public var host: String?
    /// Hosts that may see a namespace (masking).
    public var hosts: [String]?
    public var allowAnyHost: Bool?
    public var serial: String?
    public var model: String?
    /// nvmetcli port ID.
    public var port: UInt16?
    /// Port IDs a new subsystem is reachable through.
    public var ports: [UInt16]?
    public var address: String?
    /// TCP port number (trsvcid).
    public var service: String?
    /// "ipv4" or "ipv6" (default: from the address).
    public var family: String?
    /// Subsystems reachable through a new port.
    public var subsystems: [String]?
    /// Referral name.
    public var name: String?
    /// The port ID a referral reports.
    public var referralPortID: UInt16?
    /// ANA group (namespace add, port ana).
    public var anaGroup: UInt32?
    /// ANA state name (port ana): optimized, non-optimized, inaccessible, persistent-loss, change.
    public var state: String?
    /// SHA-256 of a dataset image (dataset publish), hex.
    public var sha256: String?
    /// Clone namespaces: the overlays' directory (namespace add --clone-of).
    public var overlayDirectory: String?
    /// Where `save` writes (default: the file the daemon was started with).
    public var file: String?

    public init(_ command: String) { self.command = command }
}

/// The daemon's answer. `ok` false carries `error`, a sentence that says what to fix.
public struct ControlResponse: Codable, Sendable {
    public var ok: Bool
    public var error: String?
    /// One line per change applied.
    public var changes: [String]?
    public var status: StatusInfo?
    public var subsystems: [SubsystemInfo]?
    public var namespaces: [NamespaceInfo]?
    public var ports: [PortInfo]?
    public var connections: [ConnectionInfo]?
    public var clones: [CloneInfo]?
    /// The file `save` wrote.
    public var saved: String?

    public init(ok: Bool, error: String? = nil) {
        self.ok = ok
        self.error = error
    }

    public static func failure(_ message: String) -> ControlResponse { ControlResponse(ok: false, error: message) }
}

public struct StatusInfo: Codable, Sendable {
    public var version: String
    public var pid: Int32
    public var uptimeSeconds: Int64
    public var configFile: String?
    public var subsystems: Int
    public var namespaces: Int
    public var ports: [PortInfo]
    public var controllers: Int
    public var connections: Int
    /// SENDMSG_ZC sends so far, and how many the kernel copied anyway (nil from older daemons).
    public var zeroCopySends: Int?
    public var zeroCopyCopied: Int?
    /// Bytes the reactors' data-buffer pools hold (nil from older daemons).
    public var bufferPoolBytes: Int?
    /// Multishot recv since start: connections that had a buffer ring, recvs armed, and how
    /// many were cancelled because write data began to flow (nil from older daemons).
    public var multishotConnections: Int?
    public var multishotArms: Int?
    public var multishotLeftForData: Int?
    /// Major page faults of the daemon since start (getrusage): a thread that takes one waits
    /// for a disk read — on a reactor, a page of a mapped file evicted since its residency
    /// scan (see `--page-cache-reads`). nil from older daemons.
    public var majorPageFaults: Int?
}

public struct SubsystemInfo: Codable, Sendable {
    public var nqn: String
    public var serial: String
    public var model: String
    public var allowAnyHost: Bool
    public var allowedHosts: [String]
    public var namespaces: Int
    public var ports: [UInt16]
    public var controllers: Int
}

public struct NamespaceInfo: Codable, Sendable {
    public var subsystem: String
    public var nsid: UInt32
    public var backend: String
    public var path: String?
    public var bytes: UInt64
    public var blockSize: Int
    public var readonly: Bool
    public var uuid: String
    public var nguid: String
    public var visibleTo: [String]?
    public var anaGroup: UInt32?
    /// How a file namespace's data moves now: "buffered", "O_DIRECT", "tmpfs mapping (reads,
    /// writes)" (or one of them), "inline" (see `FathomServer.dataPath`).
    public var io: String?
}

public struct PortInfo: Codable, Sendable {
    public var id: UInt16
    public var family: String
    public var address: String
    /// The TCP port actually bound.
    public var service: String
    public var subsystems: [String]
    public var referrals: [String]
    /// ANA group states through this port, e.g. "1=optimized".
    public var anaGroups: [String]?
}

public struct ConnectionInfo: Codable, Sendable {
    public var controller: UInt16
    public var subsystem: String
    public var host: String
    public var address: String
    public var port: UInt16
    public var ioQueues: Int
    public var keepAliveMs: UInt32
    public var readCommands: UInt64
    public var writeCommands: UInt64
    public var bytesRead: UInt64
    public var bytesWritten: UInt64
}

public struct CloneInfo: Codable, Sendable {
    public var subsystem: String
    public var nsid: UInt32
    public var host: String
    public var overlay: String
    /// Bytes the host has written (copied-up chunks).
    public var writtenBytes: UInt64
    public var connected: Bool
    /// Why the clone could not be opened, if it could not.
    public var error: String?
}
