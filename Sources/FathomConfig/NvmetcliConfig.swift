import FoundationEssentials

/// The JSON file `nvmetcli save` writes, as far as a TCP target uses it. Unknown keys are
/// ignored (nvmetcli saves many kernel attributes); values nvmetcli writes as strings
/// ("1", "4420") are accepted as strings or numbers. Fathom's own keys are marked.
public struct NvmetcliConfig: Codable, Sendable, Equatable {
    public var hosts: [HostEntry]?
    public var ports: [PortEntry]
    public var subsystems: [SubsystemEntry]
    /// A unique discovery NQN served besides the well-known one (nvmet's root
    /// `discovery_nqn` attribute; nvmetcli does not save it, so this is a Fathom key).
    public var discovery_nqn: String?

    public struct HostEntry: Codable, Sendable, Equatable {
        public var nqn: String
        public init(nqn: String) { self.nqn = nqn }
    }

    public struct PortEntry: Codable, Sendable, Equatable {
        public var addr: Address
        public var portid: FlexibleValue
        /// inline_data_size, max_queue_size, pi_enable (as nvmet's port `param_*`).
        public var param: [String: FlexibleValue]?
        public var subsystems: [String]?
        public var referrals: [ReferralEntry]?
        public var ana_groups: [ANAGroupEntry]?

        public struct Address: Codable, Sendable, Equatable {
            public var adrfam: String?
            public var traddr: String
            public var treq: String?
            public var trsvcid: FlexibleValue?
            public var trtype: String
            /// Referrals only: the port ID the referred discovery service reports.
            public var portid: FlexibleValue?

            public init(adrfam: String?, traddr: String, treq: String? = nil, trsvcid: FlexibleValue?, trtype: String = "tcp",
                        portid: FlexibleValue? = nil) {
                self.adrfam = adrfam
                self.traddr = traddr
                self.treq = treq
                self.trsvcid = trsvcid
                self.trtype = trtype
                self.portid = portid
            }
        }

        public init(addr: Address, portid: FlexibleValue, param: [String: FlexibleValue]? = nil, subsystems: [String]? = nil,
                    referrals: [ReferralEntry]? = nil) {
            self.addr = addr
            self.portid = portid
            self.param = param
            self.subsystems = subsystems
            self.referrals = referrals
        }
    }

    /// A referral as nvmetcli saves it: a name and an address (with its own portid).
    public struct ReferralEntry: Codable, Sendable, Equatable {
        public var name: String
        public var addr: PortEntry.Address
        public var enable: FlexibleValue?
        public init(name: String, addr: PortEntry.Address) {
            self.name = name
            self.addr = addr
        }
    }

    public struct ANAGroupEntry: Codable, Sendable, Equatable {
        public var grpid: FlexibleValue
        public var ana: [String: FlexibleValue]?
        public init(grpid: FlexibleValue, ana: [String: FlexibleValue]?) {
            self.grpid = grpid
            self.ana = ana
        }
    }

    public struct SubsystemEntry: Codable, Sendable, Equatable {
        public var nqn: String
        public var attr: [String: FlexibleValue]?
        public var allowed_hosts: [String]?
        public var namespaces: [NamespaceEntry]?

        public init(nqn: String, attr: [String: FlexibleValue]? = nil, allowed_hosts: [String]? = nil, namespaces: [NamespaceEntry]? = nil) {
            self.nqn = nqn
            self.attr = attr
            self.allowed_hosts = allowed_hosts
            self.namespaces = namespaces
        }
    }

    public struct NamespaceEntry: Codable, Sendable, Equatable {
        public var nsid: FlexibleValue
        public var enable: FlexibleValue?
        public var device: Device
        public var ana_grpid: FlexibleValue?
        /// nvmet's namespace `buffered_io` ("1": page cache, "0": O_DIRECT).
        public var buffered_io: FlexibleValue?
        /// Fathom: export write-protected (hosts see a read-only block device).
        public var readonly: FlexibleValue?
        /// Fathom: only these hosts see the namespace (per-namespace masking, as SPDK's
        /// nvmf_ns_add_host); absent: every host the subsystem admits.
        public var allowed_hosts: [String]?

        public init(nsid: FlexibleValue, enable: FlexibleValue? = nil, device: Device, readonly: FlexibleValue? = nil,
                    allowed_hosts: [String]? = nil) {
            self.nsid = nsid
            self.enable = enable
            self.device = device
            self.readonly = readonly
            self.allowed_hosts = allowed_hosts
        }

        public struct Device: Codable, Sendable, Equatable {
            public var path: String?
            public var uuid: String?
            public var nguid: String?
            /// IEEE EUI-64, 16 hex digits.
            public var eui64: String?
            /// Fathom: "1" to open with O_DIRECT (default: buffered for files, direct for devices).
            public var direct_io: FlexibleValue?
            /// Fathom: logical block size of a file-backed namespace, 512 or 4096.
            public var block_size: FlexibleValue?
            /// Fathom: "file" (default: a regular file or block device at `path`), "memory"
            /// or "null" (both need `size`; for tests and benchmarks), or "clone" (`path` is a
            /// read-only base; every host writes to its own copy-on-write overlay).
            public var backend: String?
            /// Fathom, clone namespaces: the directory of the per-host overlays (default:
            /// <state dir>/clones/<namespace NGUID>).
            public var overlay_dir: String?
            /// Fathom: size of a memory or null namespace, bytes or with a K/M/G/T suffix.
            public var size: FlexibleValue?

            public init(path: String? = nil, uuid: String? = nil, nguid: String? = nil, backend: String? = nil, size: FlexibleValue? = nil) {
                self.path = path
                self.uuid = uuid
                self.nguid = nguid
                self.backend = backend
                self.size = size
            }
        }
    }

    public init(hosts: [HostEntry]? = nil, ports: [PortEntry], subsystems: [SubsystemEntry], discovery_nqn: String? = nil) {
        self.hosts = hosts
        self.ports = ports
        self.subsystems = subsystems
        self.discovery_nqn = discovery_nqn
    }

    /// Reads a file as nvmetcli JSON (not yet validated: see `TargetConfig.validate`).
    public static func decode(_ json: [UInt8]) throws(ConfigError) -> NvmetcliConfig {
        do {
            return try JSONDecoder().decode(NvmetcliConfig.self, from: Data(json))
        } catch let error as DecodingError {
            throw ConfigError.from(error)
        } catch {
            throw ConfigError("(document)", "", "is not valid JSON: \(error)")
        }
    }

    /// The JSON `save` writes: keys sorted, indented like nvmetcli's output.
    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        // Encoding plain structs of strings cannot fail.
        return (try? [UInt8](encoder.encode(self))) ?? []
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
