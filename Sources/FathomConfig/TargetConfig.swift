import FoundationEssentials
import NVMeWire

/// The validated configuration the daemon runs: every value checked, every default filled.
public struct TargetConfig: Sendable, Equatable {
    public struct Listener: Sendable, Equatable {
        public var portID: UInt16
        public var address: String
        public var port: UInt16
        public var isIPv6: Bool
        public var subsystems: [String]
        /// Port `param.inline_data_size` (nil: the daemon's --in-capsule-kib).
        public var inlineDataSize: Int? = nil
        /// Port `param.max_queue_size` (nil: 1024).
        public var maxQueueSize: Int? = nil
        public var referrals: [ReferralSpec] = []
        /// ANA groups configured on this port and their states (group 1 is optimized unless
        /// listed; unlisted groups are inaccessible through this port).
        public var anaGroups: [UInt32: ANAState] = [:]

        /// Listeners on the same socket address are the same socket (reload keeps it open).
        public func sameEndpoint(as other: Listener) -> Bool {
            address == other.address && port == other.port && isIPv6 == other.isIPv6
        }
    }

    public struct ReferralSpec: Sendable, Equatable {
        public var name: String
        public var portID: UInt16
        public var address: String
        public var port: UInt16
        public var isIPv6: Bool

        public init(name: String, portID: UInt16, address: String, port: UInt16, isIPv6: Bool) {
            self.name = name
            self.portID = portID
            self.address = address
            self.port = port
            self.isIPv6 = isIPv6
        }
    }

    public struct SubsystemSpec: Sendable, Equatable {
        public var nqn: String
        public var serial: String
        public var model: String
        /// attr.firmware (nil: the daemon's version).
        public var firmware: String? = nil
        /// attr.version as the VS register encodes it (1.3 → 0x00010300).
        public var version: UInt32 = 0x0001_0300
        public var controllerIDs: ClosedRange<UInt16> = 1...0xFFEF
        /// attr.qid_max (nil: 128).
        public var maxIOQueues: Int? = nil
        /// attr.max_controllers (Fathom; nil: the daemon's limit).
        public var maxControllers: Int? = nil
        public var allowAnyHost: Bool
        public var allowedHosts: [String]
        public var namespaces: [NamespaceSpec]
    }

    public struct NamespaceSpec: Sendable, Equatable {
        public enum Backend: String, Sendable { case file, memory, null, clone }
        public var nsid: UInt32
        public var backend: Backend = .file
        /// Hosts that may see the namespace (Fathom's masking); nil: all the subsystem admits.
        public var visibleHosts: [String]? = nil
        /// Size of memory and null namespaces, in bytes.
        public var size: UInt64 = 0
        public var path: String
        public var uuid: [UInt8]
        public var nguid: [UInt8]
        public var readOnly: Bool
        public var directIO: Bool?
        public var blockSize: Int
        /// Clone namespaces: where the per-host overlays live (nil: under the state directory).
        public var overlayDirectory: String? = nil
        /// ana_grpid (1 unless configured).
        public var anaGroupID: UInt32 = 1
        public var eui64: [UInt8]? = nil
    }

    public var listeners: [Listener]
    public var subsystems: [SubsystemSpec]
    /// A unique discovery NQN besides the well-known one.
    public var discoveryNQN: String? = nil

    public init(listeners: [Listener], subsystems: [SubsystemSpec], discoveryNQN: String? = nil) {
        self.listeners = listeners
        self.subsystems = subsystems
        self.discoveryNQN = discoveryNQN
    }
}

/// A configuration error that names the key, the value and what to do.
public struct ConfigError: Error, CustomStringConvertible, Equatable {
    public var key: String
    public var value: String
    public var problem: String
    /// Further errors found in the same file (validation reports them all at once).
    public var others: [ConfigError] = []
    public init(_ key: String, _ value: String, _ problem: String) {
        self.key = key
        self.value = value
        self.problem = problem
    }
    public var description: String {
        ([self] + others).map { "config error at \($0.key) = \($0.value): \($0.problem)" }.joined(separator: "\n")
    }
}

extension TargetConfig {
    /// Reads and validates an nvmetcli JSON file.
    public static func load(path: String) throws(ConfigError) -> TargetConfig {
        try validate(loadRaw(path: path))
    }

    /// Reads an nvmetcli JSON file without validating it.
    public static func loadRaw(path: String) throws(ConfigError) -> NvmetcliConfig {
        guard let bytes = readFile(path) else { throw ConfigError("file", "\"\(path)\"", "cannot be read") }
        return try NvmetcliConfig.decode(bytes)
    }

    public static func parse(json: [UInt8]) throws(ConfigError) -> TargetConfig {
        try validate(NvmetcliConfig.decode(json))
    }

    public static func validate(_ raw: NvmetcliConfig) throws(ConfigError) -> TargetConfig {
        var errors: [ConfigError] = []
        var subsystems: [SubsystemSpec] = []
        var seenNQNs = Set<String>()
        // Hosts key multipath and udev names on these: two namespaces must never share one.
        var seenIDs: [[UInt8]: String] = [:]
        for (i, s) in raw.subsystems.enumerated() {
            let key = "subsystems[\(i)]"
            do throws(ConfigError) {
                if let problem = NQN.problem(s.nqn) { throw ConfigError("\(key).nqn", "\"\(s.nqn)\"", "is not a valid NQN: it \(problem)") }
                if s.nqn == NQN.discovery { throw ConfigError("\(key).nqn", "\"\(s.nqn)\"", "is the discovery NQN, which the target provides itself") }
                guard seenNQNs.insert(s.nqn).inserted else { throw ConfigError("\(key).nqn", "\"\(s.nqn)\"", "is defined twice") }
                let attr = s.attr ?? [:]
                var allowAny = false
                if let v = attr["allow_any_host"] {
                    guard let b = v.bool else { throw ConfigError("\(key).attr.allow_any_host", v.description, "must be \"0\" or \"1\"") }
                    allowAny = b
                }
                var spec = try subsystemAttributes(attr, nqn: s.nqn, key: "\(key).attr")
                let hosts = s.allowed_hosts ?? []
                for (h, host) in hosts.enumerated() where !NQN.isValid(host) {
                    throw ConfigError("\(key).allowed_hosts[\(h)]", "\"\(host)\"", "is not a valid host NQN: it \(NQN.problem(host)!)")
                }
                var namespaces: [NamespaceSpec] = []
                var nsids = Set<UInt32>()
                for (n, ns) in (s.namespaces ?? []).enumerated() {
                    let nkey = "\(key).namespaces[\(n)]"
                    do throws(ConfigError) {
                        guard let nsid = ns.nsid.int, nsid >= 1, nsid < 0xFFFF_FFFF else {
                            throw ConfigError("\(nkey).nsid", ns.nsid.description, "must be a number from 1 to 4294967294")
                        }
                        guard nsid <= 1024 else { throw ConfigError("\(nkey).nsid", ns.nsid.description, "is above 1024, the most this target supports") }
                        guard nsids.insert(UInt32(nsid)).inserted else { throw ConfigError("\(nkey).nsid", ns.nsid.description, "is used twice in \(s.nqn)") }
                        if let e = ns.enable, let on = e.bool, !on { continue }
                        if let e = ns.enable, e.bool == nil { throw ConfigError("\(nkey).enable", e.description, "must be 0 or 1") }
                        var backend = NamespaceSpec.Backend.file
                        if let b = ns.device.backend {
                            guard let v = NamespaceSpec.Backend(rawValue: b) else {
                                throw ConfigError("\(nkey).device.backend", "\"\(b)\"", "must be \"file\", \"memory\", \"null\" or \"clone\"")
                            }
                            backend = v
                        }
                        var size: UInt64 = 0
                        if backend == .memory || backend == .null {
                            guard let s = ns.device.size else { throw ConfigError("\(nkey).device.size", "(missing)", "is required for a \(backend) namespace") }
                            guard let bytes = ByteSize.parse(s.text), bytes >= 4096, bytes <= 1 << 50 else {
                                throw ConfigError("\(nkey).device.size", s.description, "must be a size such as 1073741824, 512M or 4G (from 4K to 1P)")
                            }
                            size = bytes
                        } else {
                            guard let p = ns.device.path else { throw ConfigError("\(nkey).device.path", "(missing)", "is required") }
                            guard !p.isEmpty else { throw ConfigError("\(nkey).device.path", "\"\"", "must name a file or block device") }
                        }
                        let uuid = try identifier(ns.device.uuid, key: "\(nkey).device.uuid", name: "UUID", nqn: s.nqn, nsid: UInt32(nsid))
                        let nguid = try identifier(ns.device.nguid, key: "\(nkey).device.nguid", name: "NGUID", nqn: s.nqn, nsid: UInt32(nsid))
                        for (field, id) in [("uuid", uuid), ("nguid", nguid)] {
                            if let other = seenIDs[id] {
                                throw ConfigError("\(nkey).device.\(field)", "\"\(UUIDText.format(id, dashes: field == "uuid"))\"",
                                                  "is already the identifier of \(other); every namespace needs its own")
                            }
                            seenIDs[id] = "\(nkey).device.\(field)"
                        }
                        var anaGroup: UInt32 = 1
                        if let g = ns.ana_grpid {
                            guard let v = g.int, v >= 1, v <= Int(ANALog.maxGroups) else {
                                throw ConfigError("\(nkey).ana_grpid", g.description, "must be an ANA group from 1 to 128")
                            }
                            anaGroup = UInt32(v)
                        }
                        var eui64: [UInt8]? = nil
                        if let e = ns.device.eui64, !e.isEmpty {
                            let hex = e.filter { $0 != "-" && $0 != ":" }
                            guard hex.count == 16, let v = UInt64(hex, radix: 16) else {
                                throw ConfigError("\(nkey).device.eui64", "\"\(e)\"", "is not an EUI-64 (16 hex digits)")
                            }
                            eui64 = (0..<8).map { UInt8(truncatingIfNeeded: v >> (56 - 8 * $0)) }
                            if let other = seenIDs[eui64!] {
                                throw ConfigError("\(nkey).device.eui64", "\"\(e)\"", "is already the identifier of \(other); every namespace needs its own")
                            }
                            seenIDs[eui64!] = "\(nkey).device.eui64"
                        }
                        var readOnly = false
                        if let r = ns.readonly {
                            guard let b = r.bool else { throw ConfigError("\(nkey).readonly", r.description, "must be true or false") }
                            readOnly = b
                        }
                        var direct: Bool? = nil
                        if let d = ns.device.direct_io {
                            guard let b = d.bool else { throw ConfigError("\(nkey).device.direct_io", d.description, "must be 0 or 1") }
                            direct = b
                        }
                        if let b = ns.buffered_io {
                            guard let buffered = b.bool else { throw ConfigError("\(nkey).buffered_io", b.description, "must be 0 or 1") }
                            if let direct, direct == buffered {
                                throw ConfigError("\(nkey).buffered_io", b.description, "contradicts device.direct_io; give one of them")
                            }
                            direct = !buffered
                        }
                        var blockSize = 512
                        if let b = ns.device.block_size {
                            guard let v = b.int, v == 512 || v == 4096 else { throw ConfigError("\(nkey).device.block_size", b.description, "must be 512 or 4096") }
                            blockSize = v
                        }
                        var spec = NamespaceSpec(nsid: UInt32(nsid), path: ns.device.path ?? "", uuid: uuid, nguid: nguid,
                                                 readOnly: readOnly, directIO: direct, blockSize: blockSize)
                        spec.backend = backend
                        spec.size = size
                        spec.anaGroupID = anaGroup
                        if backend == .clone {
                            guard !readOnly else {
                                throw ConfigError("\(nkey).readonly", "true", "contradicts a clone (each host writes its own copy); export the base as a read-only file namespace instead")
                            }
                            if let d = ns.device.overlay_dir {
                                guard d.hasPrefix("/") else { throw ConfigError("\(nkey).device.overlay_dir", "\"\(d)\"", "must be an absolute path") }
                                spec.overlayDirectory = d
                            }
                        }
                        spec.eui64 = eui64
                        if let hosts = ns.allowed_hosts {
                            for (h, host) in hosts.enumerated() where !NQN.isValid(host) {
                                throw ConfigError("\(nkey).allowed_hosts[\(h)]", "\"\(host)\"", "is not a valid host NQN: it \(NQN.problem(host)!)")
                            }
                            spec.visibleHosts = hosts
                        }
                        namespaces.append(spec)
                    } catch {
                        errors.append(error)
                    }
                }
                spec.allowAnyHost = allowAny
                spec.allowedHosts = hosts
                spec.namespaces = namespaces
                subsystems.append(spec)
            } catch {
                errors.append(error)
            }
        }
        var listeners: [Listener] = []
        var portIDs = Set<UInt16>()
        for (i, p) in raw.ports.enumerated() {
            do throws(ConfigError) {
                let l = try listener(p, key: "ports[\(i)]", subsystems: seenNQNs)
                guard portIDs.insert(l.portID).inserted else { throw ConfigError("ports[\(i)].portid", p.portid.description, "is used by two ports") }
                if let other = listeners.first(where: { $0.sameEndpoint(as: l) && l.port != 0 }) {
                    throw ConfigError("ports[\(i)].addr", "\"\(l.address):\(l.port)\"", "is also the address of port \(other.portID)")
                }
                listeners.append(l)
            } catch {
                errors.append(error)
            }
        }
        // A namespace's ANA group must exist on some port (group 1 always does).
        let groups = Set(listeners.flatMap { $0.anaGroups.keys }).union([1])
        for (i, s) in subsystems.enumerated() {
            for ns in s.namespaces where !groups.contains(ns.anaGroupID) {
                errors.append(ConfigError("subsystems[\(i)].namespaces[nsid \(ns.nsid)].ana_grpid", "\"\(ns.anaGroupID)\"",
                                          "names an ANA group no port defines (add it under a port's ana_groups)"))
            }
        }
        var discoveryNQN: String? = nil
        if let d = raw.discovery_nqn, !d.isEmpty {
            if let problem = NQN.problem(d) {
                errors.append(ConfigError("discovery_nqn", "\"\(d)\"", "is not a valid NQN: it \(problem)"))
            } else if seenNQNs.contains(d) {
                errors.append(ConfigError("discovery_nqn", "\"\(d)\"", "is also the NQN of a subsystem"))
            } else if d != NQN.discovery {
                discoveryNQN = d
            }
        }
        if raw.ports.isEmpty { errors.append(ConfigError("ports", "[]", "must list at least one port to listen on")) }
        // Every problem at once, so one edit fixes them all.
        if var first = errors.first {
            first.others = Array(errors.dropFirst())
            throw first
        }
        return TargetConfig(listeners: listeners, subsystems: subsystems, discoveryNQN: discoveryNQN)
    }

    /// A namespace identifier from the config (32 hex digits, dashes allowed), or one derived
    /// from the subsystem NQN and NSID so it stays the same across restarts.
    static func identifier(_ text: String?, key: String, name: String, nqn: String, nsid: UInt32) throws(ConfigError) -> [UInt8] {
        guard let text, !text.isEmpty else {
            return StableID.derive(name.lowercased(), nqn, nsid, uuidVersion: name == "UUID")
        }
        guard let id = UUIDText.parse(text) else { throw ConfigError(key, "\"\(text)\"", "is not a\(name == "UUID" ? "" : "n") \(name) (32 hex digits)") }
        return id
    }

    static func defaultSerial(_ nqn: String) -> String {
        let id = StableID.derive("serial", nqn, 0, uuidVersion: false)
        return id.prefix(8).map { String($0, radix: 16).leftPadded(2) }.joined()
    }

    static func readFile(_ path: String) -> [UInt8]? {
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        return [UInt8](data)
    }
}

extension ConfigError {
    static func from(_ error: DecodingError) -> ConfigError {
        func path(_ ctx: DecodingError.Context) -> String {
            var s = ""
            for k in ctx.codingPath {
                if let i = k.intValue { s += "[\(i)]" } else { s += s.isEmpty ? k.stringValue : ".\(k.stringValue)" }
            }
            return s.isEmpty ? "(document)" : s
        }
        switch error {
        case let .keyNotFound(key, ctx):
            let parent = path(ctx)
            return ConfigError(parent == "(document)" ? key.stringValue : "\(parent).\(key.stringValue)", "(missing)", "is required")
        case let .typeMismatch(type, ctx):
            return ConfigError(path(ctx), "(wrong type)", "must be \(type == String.self ? "a string" : "\(type)")")
        case let .valueNotFound(type, ctx):
            return ConfigError(path(ctx), "null", "must be \(type)")
        case let .dataCorrupted(ctx):
            return ConfigError(path(ctx), "", "is not valid JSON: \(ctx.debugDescription)")
        @unknown default:
            return ConfigError("(document)", "", "\(error)")
        }
    }
}

/// "4096", "512K", "64M", "4G", "1T" (binary units) as bytes.
public enum ByteSize {
    public static func parse(_ text: String) -> UInt64? {
        let t = String(text.filter { $0 != " " }).uppercased()
        guard let last = t.last else { return nil }
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        if let unit = units[last] {
            guard let n = UInt64(t.dropLast()) else { return nil }
            let (v, overflow) = n.multipliedReportingOverflow(by: unit)
            return overflow ? nil : v
        }
        return UInt64(t)
    }
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: "0", count: max(0, width - count)) + self }
}
