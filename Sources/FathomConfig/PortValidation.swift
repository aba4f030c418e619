import NVMeWire

/// Validation of nvmetcli's port and subsystem attributes (one place, used by `validate`).
extension TargetConfig {
    /// One port: address, transport parameters and referrals.
    static func listener(_ p: NvmetcliConfig.PortEntry, key: String, subsystems: Set<String>) throws(ConfigError) -> Listener {
        guard let id = p.portid.int, id >= 0, id < 0xFFFF else { throw ConfigError("\(key).portid", p.portid.description, "must be a number from 0 to 65534") }
        let (address, port, v6) = try endpoint(p.addr, key: "\(key).addr", defaultService: "4420")
        let subs = p.subsystems ?? []
        for (j, nqn) in subs.enumerated() where !subsystems.contains(nqn) {
            throw ConfigError("\(key).subsystems[\(j)]", "\"\(nqn)\"", "names no subsystem defined under \"subsystems\"")
        }
        var l = Listener(portID: UInt16(id), address: address, port: port, isIPv6: v6, subsystems: subs)
        for (name, value) in (p.param ?? [:]).sorted(by: { $0.key < $1.key }) {
            let pkey = "\(key).param.\(name)"
            switch name {
            case "inline_data_size":
                // nvmet's default is 16 KiB; more than an MDTS's worth buys nothing.
                guard let v = value.int, v >= 0, v <= 524_288 else { throw ConfigError(pkey, value.description, "must be a byte count from 0 to 524288 (the largest transfer)") }
                l.inlineDataSize = v
            case "max_queue_size":
                guard let v = value.int, v >= 16, v <= 1024 else { throw ConfigError(pkey, value.description, "must be from 16 to 1024 entries") }
                l.maxQueueSize = v
            case "pi_enable":
                guard value.bool == false else { throw ConfigError(pkey, value.description, "must be 0: Fathom does not support protection information") }
            default:
                break  // other kernel parameters (e.g. for RDMA) do not apply to a TCP port
            }
        }
        for (j, g) in (p.ana_groups ?? []).enumerated() {
            guard let id = g.grpid.int, id >= 1, id <= Int(ANALog.maxGroups) else {
                throw ConfigError("\(key).ana_groups[\(j)].grpid", g.grpid.description, "must be from 1 to 128")
            }
            let name = g.ana?["state"]?.text ?? "optimized"
            guard let state = ANAState(name: name) else {
                throw ConfigError("\(key).ana_groups[\(j)].ana.state", "\"\(name)\"",
                                  "must be one of \(ANAState.allCases.map(\.name).joined(separator: ", "))")
            }
            guard l.anaGroups.updateValue(state, forKey: UInt32(id)) == nil else {
                throw ConfigError("\(key).ana_groups[\(j)].grpid", g.grpid.description, "is listed twice on this port")
            }
        }
        for (j, r) in (p.referrals ?? []).enumerated() {
            let rkey = "\(key).referrals[\(j)]"
            if let e = r.enable, e.bool == false { continue }
            let (raddr, rport, rv6) = try endpoint(r.addr, key: "\(rkey).addr", defaultService: "8009")
            let rid = r.addr.portid?.int ?? 0
            guard rid >= 0, rid < 0xFFFF else { throw ConfigError("\(rkey).addr.portid", r.addr.portid!.description, "must be a number from 0 to 65534") }
            guard !r.name.isEmpty else { throw ConfigError("\(rkey).name", "\"\"", "must name the referral") }
            guard !l.referrals.contains(where: { $0.name == r.name }) else { throw ConfigError("\(rkey).name", "\"\(r.name)\"", "is used twice on this port") }
            l.referrals.append(ReferralSpec(name: r.name, portID: UInt16(rid), address: raddr, port: rport, isIPv6: rv6))
        }
        return l
    }

    /// An nvmetcli `addr`: TCP only, a literal IPv4 or IPv6 address, a port number.
    static func endpoint(_ a: NvmetcliConfig.PortEntry.Address, key: String, defaultService: String) throws(ConfigError) -> (String, UInt16, Bool) {
        guard a.trtype.lowercased() == "tcp" else {
            throw ConfigError("\(key).trtype", "\"\(a.trtype)\"", "is not supported: Fathom serves NVMe/TCP only (use \"tcp\")")
        }
        let family = (a.adrfam ?? "ipv4").lowercased()
        guard family == "ipv4" || family == "ipv6" else { throw ConfigError("\(key).adrfam", "\"\(family)\"", "must be \"ipv4\" or \"ipv6\"") }
        guard IPAddressText.isValid(a.traddr, ipv6: family == "ipv6") else {
            throw ConfigError("\(key).traddr", "\"\(a.traddr)\"", "is not an \(family) address")
        }
        if let treq = a.treq, treq == "required" {
            throw ConfigError("\(key).treq", "\"\(treq)\"", "is not supported: Fathom has no TLS secure channel (use \"not specified\")")
        }
        let service = a.trsvcid?.text ?? defaultService
        guard let port = UInt16(service) else {
            throw ConfigError("\(key).trsvcid", "\"\(service)\"", "must be a TCP port number (4420 for I/O, 8009 for discovery)")
        }
        return (a.traddr, port, family == "ipv6")
    }

    /// A subsystem's `attr`: serial, model, firmware, version, cntlid_min/max, qid_max.
    static func subsystemAttributes(_ attr: [String: FlexibleValue], nqn: String, key: String) throws(ConfigError) -> SubsystemSpec {
        let serial = attr["serial"]?.text ?? defaultSerial(nqn)
        guard serial.utf8.count <= 20, serial.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
            throw ConfigError("\(key).serial", "\"\(serial)\"", "must be at most 20 printable ASCII characters")
        }
        let model = attr["model"]?.text ?? "Fathom"
        guard model.utf8.count <= 40, model.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else {
            throw ConfigError("\(key).model", "\"\(model)\"", "must be at most 40 printable ASCII characters")
        }
        var spec = SubsystemSpec(nqn: nqn, serial: serial, model: model, allowAnyHost: false, allowedHosts: [], namespaces: [])
        if let f = attr["firmware"], !f.text.isEmpty {
            guard f.text.utf8.count <= 8 else { throw ConfigError("\(key).firmware", f.description, "must be at most 8 characters") }
            spec.firmware = f.text
        }
        if let v = attr["version"] {
            switch v.text {
            case "1.2": spec.version = 0x0001_0200
            case "1.3", "1.3.0": spec.version = 0x0001_0300
            default: throw ConfigError("\(key).version", v.description, "must be \"1.3\" or \"1.2\" (Fathom implements NVMe 1.3)")
            }
        }
        let low = try number(attr["cntlid_min"], key: "\(key).cntlid_min", range: 1...0xFFEF) ?? 1
        let high = try number(attr["cntlid_max"], key: "\(key).cntlid_max", range: 1...0xFFEF) ?? 0xFFEF
        guard low <= high else { throw ConfigError("\(key).cntlid_min", "\"\(low)\"", "is above cntlid_max (\(high))") }
        spec.controllerIDs = UInt16(low)...UInt16(high)
        spec.maxIOQueues = try number(attr["qid_max"], key: "\(key).qid_max", range: 1...128)
        spec.maxControllers = try number(attr["max_controllers"], key: "\(key).max_controllers", range: 1...0xFFEF)
        if let pi = attr["pi_enable"], pi.bool != false {
            throw ConfigError("\(key).pi_enable", pi.description, "must be 0: Fathom does not support protection information")
        }
        return spec
    }

    private static func number(_ v: FlexibleValue?, key: String, range: ClosedRange<Int>) throws(ConfigError) -> Int? {
        guard let v else { return nil }
        guard let n = v.int, range.contains(n) else { throw ConfigError(key, v.description, "must be a number from \(range.lowerBound) to \(range.upperBound)") }
        return n
    }
}
