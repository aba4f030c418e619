import FathomConfig
import FathomDataset
import NVMeWire

/// The control verbs as edits of the nvmetcli document. Each works on a copy; the service
/// validates and applies the result as a whole, so a request changes all it asks or nothing.
/// Errors say what is wrong with the request, in the words of fathomctl's options.
public enum ConfigEditor {
    public static func addSubsystem(_ doc: inout NvmetcliConfig, _ r: ControlRequest) throws(ControlError) {
        let nqn = try required(r.subsystem, "subsystem NQN")
        guard !doc.subsystems.contains(where: { $0.nqn == nqn }) else { throw ControlError("subsystem \(nqn) already exists") }
        var attr: [String: FlexibleValue] = ["allow_any_host": FlexibleValue(r.allowAnyHost == true ? "1" : "0")]
        if let s = r.serial { attr["serial"] = FlexibleValue(s) }
        if let m = r.model { attr["model"] = FlexibleValue(m) }
        doc.subsystems.append(.init(nqn: nqn, attr: attr, allowed_hosts: r.hosts ?? [], namespaces: []))
        for id in r.ports ?? [] {
            let i = try portIndex(doc, id)
            doc.ports[i].subsystems = (doc.ports[i].subsystems ?? []) + [nqn]
        }
    }

    /// Removes a subsystem and its links from every port (its hosts are disconnected).
    public static func removeSubsystem(_ doc: inout NvmetcliConfig, _ r: ControlRequest) throws(ControlError) {
        let nqn = try required(r.subsystem, "subsystem NQN")
        let i = try subsystemIndex(doc, nqn)
        doc.subsystems.remove(at: i)
        for p in doc.ports.indices { doc.ports[p].subsystems?.removeAll { $0 == nqn } }
    }

    public static func addNamespace(_ doc: inout NvmetcliConfig, _ r: ControlRequest) throws(ControlError) {
        let s = try subsystemIndex(doc, try required(r.subsystem, "--subsystem"))
        var list = doc.subsystems[s].namespaces ?? []
        let used = Set(list.compactMap { $0.nsid.int })
        let nsid: Int
        if let n = r.nsid {
            guard !used.contains(Int(n)) else { throw ControlError("namespace \(n) already exists in \(doc.subsystems[s].nqn)") }
            nsid = Int(n)
        } else {
            guard let free = (1...1024).first(where: { !used.contains($0) }) else { throw ControlError("\(doc.subsystems[s].nqn) has 1024 namespaces already") }
            nsid = free
        }
        let backend = r.backend ?? "file"
        var device = NvmetcliConfig.NamespaceEntry.Device(path: r.path, uuid: r.uuid, nguid: r.nguid)
        if backend == "file" {
            _ = try required(r.path, "--path (a file or block device)")
        } else if backend == "clone" {
            _ = try required(r.path, "--clone-of (the read-only base image)")
            device.backend = backend
            device.overlay_dir = r.overlayDirectory
        } else {
            device.backend = backend
            device.size = FlexibleValue(try required(r.size, "--size for a \(backend) namespace"))
        }
        var entry = NvmetcliConfig.NamespaceEntry(nsid: FlexibleValue(String(nsid)), enable: FlexibleValue("1"), device: device)
        if r.readonly == true { entry.readonly = FlexibleValue("1") }
        if let hosts = r.hosts, !hosts.isEmpty { entry.allowed_hosts = hosts }
        if let g = r.anaGroup { entry.ana_grpid = FlexibleValue(String(g)) }
        list.append(entry)
        doc.subsystems[s].namespaces = list
    }

    public static func removeNamespace(_ doc: inout NvmetcliConfig, _ r: ControlRequest) throws(ControlError) {
        let (s, n) = try namespaceIndex(doc, r)
        doc.subsystems[s].namespaces!.remove(at: n)
    }

    /// A null namespace takes the new size from the request; a file namespace's size is its
    /// file's, so the caller grows the file first (the service does, given --size).
    public static func resizeNamespace(_ doc: inout NvmetcliConfig, _ r: ControlRequest) throws(ControlError) {
        let (s, n) = try namespaceIndex(doc, r)
        let device = doc.subsystems[s].namespaces![n].device
        switch device.backend ?? "file" {
        case "null":
            doc.subsystems[s].namespaces![n].device.size = FlexibleValue(try required(r.size, "--size"))
        case "memory":
            throw ControlError("a memory namespace cannot be resized: its contents would be lost (remove and add it instead)")
        default:
            break
        }
    }

    public static func allowHost(_ doc: inout NvmetcliConfig, _ r: ControlRequest) throws(ControlError) {
        let s = try subsystemIndex(doc, try required(r.subsystem, "--subsystem"))
        let host = try required(r.host, "host NQN")
        var hosts = doc.subsystems[s].allowed_hosts ?? []
        guard !hosts.contains(host) else { throw ControlError("\(host) is already allowed on \(doc.subsystems[s].nqn)") }
        hosts.append(host)
        doc.subsystems[s].allowed_hosts = hosts
        if !(doc.hosts ?? []).contains(where: { $0.nqn == host }) { doc.hosts = (doc.hosts ?? []) + [.init(nqn: host)] }
    }

    /// Takes a host off the subsystem's list; its controllers there are disconnected. On a
    /// subsystem that admits any host this is refused: the host would still get in.
    public static func denyHost(_ doc: inout NvmetcliConfig, _ r: ControlRequest) throws(ControlError) {
        let s = try subsystemIndex(doc, try required(r.subsystem, "--subsystem"))
        let host = try required(r.host, "host NQN")
        let nqn = doc.subsystems[s].nqn
        guard (doc.subsystems[s].allowed_hosts ?? []).contains(host) else {
            if doc.subsystems[s].attr?["allow_any_host"]?.bool == true {
                throw ControlError("\(nqn) admits any host; turn allow_any_host off first (subsystem add --allowed-host ..., or edit the config)")
            }
            throw ControlError("\(host) is not on the allowed list of \(nqn)")
        }
        doc.subsystems[s].allowed_hosts!.removeAll { $0 == host }
    }

    public static func addPort(_ doc: inout NvmetcliConfig, _ r: ControlRequest) throws(ControlError) {
        let id = try required(r.port, "--id (the port ID)")
        guard !doc.ports.contains(where: { $0.portid.int == Int(id) }) else { throw ControlError("port \(id) already exists") }
        let address = try required(r.address, "--address")
        for nqn in r.subsystems ?? [] { _ = try subsystemIndex(doc, nqn) }
        let family = r.family ?? (address.contains(":") ? "ipv6" : "ipv4")
        doc.ports.append(.init(addr: .init(adrfam: family, traddr: address, treq: "not specified", trsvcid: FlexibleValue(r.service ?? "4420")),
                               portid: FlexibleValue(String(id)), subsystems: r.subsystems ?? [], referrals: []))
    }

    public static func removePort(_ doc: inout NvmetcliConfig, _ r: ControlRequest) throws(ControlError) {
        let i = try portIndex(doc, try required(r.port, "--id (the port ID)"))
        doc.ports.remove(at: i)
    }

    /// Sets the state of an ANA group through a port (creating the group there): the way to
    /// move hosts off a path before maintenance, or back.
    public static func setANAState(_ doc: inout NvmetcliConfig, _ r: ControlRequest) throws(ControlError) {
        let i = try portIndex(doc, try required(r.port, "--id (the port ID)"))
        let group = try required(r.anaGroup, "--group")
        let state = try required(r.state, "--state")
        guard ANAState(name: state) != nil else {
            throw ControlError("--state \(state) is not one of \(ANAState.allCases.map(\.name).joined(separator: ", "))")
        }
        var groups = doc.ports[i].ana_groups ?? []
        let entry = NvmetcliConfig.ANAGroupEntry(grpid: FlexibleValue(String(group)), ana: ["state": FlexibleValue(state)])
        if let j = groups.firstIndex(where: { $0.grpid.int == Int(group) }) { groups[j] = entry } else { groups.append(entry) }
        doc.ports[i].ana_groups = groups
    }

    public static func addReferral(_ doc: inout NvmetcliConfig, _ r: ControlRequest) throws(ControlError) {
        let i = try portIndex(doc, try required(r.port, "--port (the port whose discovery log lists it)"))
        let name = try required(r.name, "--name")
        let address = try required(r.address, "--address")
        var list = doc.ports[i].referrals ?? []
        guard !list.contains(where: { $0.name == name }) else { throw ControlError("port \(r.port!) already has a referral named \(name)") }
        list.append(.init(name: name, addr: .init(adrfam: r.family ?? (address.contains(":") ? "ipv6" : "ipv4"), traddr: address,
                                                  treq: "not specified", trsvcid: FlexibleValue(r.service ?? "8009"),
                                                  portid: FlexibleValue(String(r.referralPortID ?? 0)))))
        doc.ports[i].referrals = list
    }

    public static func removeReferral(_ doc: inout NvmetcliConfig, _ r: ControlRequest) throws(ControlError) {
        let i = try portIndex(doc, try required(r.port, "--port"))
        let name = try required(r.name, "--name")
        guard let j = doc.ports[i].referrals?.firstIndex(where: { $0.name == name }) else {
            throw ControlError("port \(r.port!) has no referral named \(name)")
        }
        doc.ports[i].referrals!.remove(at: j)
    }

    /// Publishes a dataset image read-only: creates the subsystem if needed (linked to the
    /// given ports, else every port that serves subsystems; any host, unless hosts are
    /// named), adds the named hosts, and adds the image with identifiers derived from its
    /// digest. Publishing the same image again is a no-op.
    public static func publishDataset(_ doc: inout NvmetcliConfig, _ r: ControlRequest) throws(ControlError) {
        let nqn = try required(r.subsystem, "--subsystem")
        let path = try required(r.path, "the image path")
        guard let ids = DatasetManifest.identifiers(sha256: try required(r.sha256, "the image's SHA-256")) else {
            throw ControlError("the SHA-256 is not 64 hex digits")
        }
        let nguid = UUIDText.format(ids.nguid, dashes: false)
        for s in doc.subsystems {
            for ns in s.namespaces ?? [] where ns.device.nguid.flatMap(UUIDText.parse) == ids.nguid {
                if s.nqn == nqn { return }  // already published here: nothing to do
                throw ControlError("this image is already published in \(s.nqn) as namespace \(ns.nsid.text); a namespace identity is unique per target")
            }
        }
        let hosts = r.hosts ?? []
        if doc.subsystems.contains(where: { $0.nqn == nqn }) {
            let i = try subsystemIndex(doc, nqn)
            for h in hosts where !(doc.subsystems[i].allowed_hosts ?? []).contains(h) {
                doc.subsystems[i].allowed_hosts = (doc.subsystems[i].allowed_hosts ?? []) + [h]
            }
        } else {
            var add = ControlRequest("subsystem.add")
            add.subsystem = nqn
            add.allowAnyHost = hosts.isEmpty
            add.hosts = hosts
            add.model = "Fathom dataset"
            let serving = doc.ports.filter { !($0.subsystems ?? []).isEmpty }.compactMap { $0.portid.int.map(UInt16.init) }
            add.ports = (r.ports ?? []).isEmpty ? (serving.isEmpty ? doc.ports.compactMap { $0.portid.int.map(UInt16.init) } : serving) : r.ports
            try addSubsystem(&doc, add)
        }
        var ns = ControlRequest("namespace.add")
        ns.subsystem = nqn
        ns.nsid = r.nsid
        ns.path = path
        ns.readonly = true
        ns.nguid = nguid
        ns.uuid = UUIDText.format(ids.uuid, dashes: true)
        try addNamespace(&doc, ns)
    }

    // MARK: Lookups

    static func required<T>(_ value: T?, _ what: String) throws(ControlError) -> T {
        guard let value else { throw ControlError("missing \(what)") }
        return value
    }

    static func subsystemIndex(_ doc: NvmetcliConfig, _ nqn: String) throws(ControlError) -> Int {
        guard let i = doc.subsystems.firstIndex(where: { $0.nqn == nqn }) else {
            throw ControlError("no subsystem \(nqn) (fathomctl subsystem list shows them)")
        }
        return i
    }

    static func portIndex(_ doc: NvmetcliConfig, _ id: UInt16) throws(ControlError) -> Int {
        guard let i = doc.ports.firstIndex(where: { $0.portid.int == Int(id) }) else {
            throw ControlError("no port \(id) (fathomctl port list shows them)")
        }
        return i
    }

    static func namespaceIndex(_ doc: NvmetcliConfig, _ r: ControlRequest) throws(ControlError) -> (Int, Int) {
        let s = try subsystemIndex(doc, try required(r.subsystem, "--subsystem"))
        let nsid = try required(r.nsid, "--nsid")
        guard let n = doc.subsystems[s].namespaces?.firstIndex(where: { $0.nsid.int == Int(nsid) }) else {
            throw ControlError("\(doc.subsystems[s].nqn) has no namespace \(nsid)")
        }
        return (s, n)
    }
}
