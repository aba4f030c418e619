import FoundationEssentials

/// The JSON file `nvmetcli save` writes, as far as a TCP target uses it. Unknown keys are
/// ignored (nvmetcli saves many kernel attributes); values nvmetcli writes as strings
/// ("1", "4420") are accepted as strings or numbers. Fathom's own keys are marked.
public struct NvmetcliConfig: Codable, Sendable {
    public var hosts: [HostEntry]?
    public var ports: [PortEntry]
    public var subsystems: [SubsystemEntry]

    public struct HostEntry: Codable, Sendable {
        public var nqn: String
    }

    public struct PortEntry: Codable, Sendable {
        public var addr: Address
        public var portid: FlexibleValue
        public var subsystems: [String]?
        public var referrals: [FlexibleObject]?

        public struct Address: Codable, Sendable {
            public var adrfam: String?
            public var traddr: String
            public var treq: String?
            public var trsvcid: FlexibleValue?
            public var trtype: String
        }
    }

    public struct SubsystemEntry: Codable, Sendable {
        public var nqn: String
        public var attr: [String: FlexibleValue]?
        public var allowed_hosts: [String]?
        public var namespaces: [NamespaceEntry]?
    }

    public struct NamespaceEntry: Codable, Sendable {
        public var nsid: FlexibleValue
        public var enable: FlexibleValue?
        public var device: Device
        /// Fathom: export write-protected (hosts see a read-only block device).
        public var readonly: FlexibleValue?
        /// Fathom: only these hosts see the namespace (per-namespace masking, as SPDK's
        /// nvmf_ns_add_host); absent: every host the subsystem admits.
        public var allowed_hosts: [String]?

        public struct Device: Codable, Sendable {
            public var path: String?
            public var uuid: String?
            public var nguid: String?
            /// Fathom: "1" to open with O_DIRECT (default: buffered for files, direct for devices).
            public var direct_io: FlexibleValue?
            /// Fathom: logical block size of a file-backed namespace, 512 or 4096.
            public var block_size: FlexibleValue?
            /// Fathom: "file" (default: a regular file or block device at `path`), "memory"
            /// or "null" (both need `size`; for tests and benchmarks).
            public var backend: String?
            /// Fathom: size of a memory or null namespace, bytes or with a K/M/G/T suffix.
            public var size: FlexibleValue?
        }
    }

    public init(hosts: [HostEntry]? = nil, ports: [PortEntry], subsystems: [SubsystemEntry]) {
        self.hosts = hosts
        self.ports = ports
        self.subsystems = subsystems
    }
}

/// A scalar nvmetcli may write as a string or as a number.
public struct FlexibleValue: Codable, Sendable, Equatable, CustomStringConvertible {
    public var text: String

    public init(_ text: String) { self.text = text }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) { text = s }
        else if let i = try? c.decode(Int64.self) { text = String(i) }
        else if let b = try? c.decode(Bool.self) { text = b ? "1" : "0" }
        else if c.decodeNil() { text = "" }
        else { throw DecodingError.typeMismatch(String.self, .init(codingPath: c.codingPath, debugDescription: "expected a string or a number")) }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(text)
    }

    public var description: String { "\"\(text)\"" }
    public var int: Int? { Int(text) }
    /// nvmetcli writes booleans as "0"/"1"; accept true/false/yes/no too.
    public var bool: Bool? {
        switch text.lowercased() {
        case "1", "true", "yes", "y": return true
        case "0", "false", "no", "n", "": return false
        default: return nil
        }
    }
}

/// Any JSON object, kept only to be ignored (referrals).
public struct FlexibleObject: Codable, Sendable {
    public init(from decoder: Decoder) throws {}
    public func encode(to encoder: Encoder) throws {}
}
