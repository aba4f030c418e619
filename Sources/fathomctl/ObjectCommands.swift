import ArgumentParser
import FathomControl

struct SubsystemCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "subsystem", abstract: "Add, remove or list subsystems.",
                                                    subcommands: [Add.self, Remove.self, List.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a subsystem (no namespaces yet).")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The subsystem NQN (nqn.yyyy-mm.reverse.domain:name).") var nqn: String
        @Flag(help: "Admit any host (default: only --allowed-host ones).") var allowAnyHost = false
        @Option(help: "A host NQN that may connect (repeatable).") var allowedHost: [String] = []
        @Option(help: "Serial number (default: derived from the NQN).") var serial: String?
        @Option(help: "Model number.") var model: String?
        @Option(help: "Port ID to make it reachable through (repeatable).") var port: [UInt16] = []

        func run() throws {
            var r = ControlRequest("subsystem.add")
            r.subsystem = nqn
            r.allowAnyHost = allowAnyHost
            r.hosts = allowedHost
            r.serial = serial
            r.model = model
            r.ports = port
            try global.run(r)
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a subsystem; its hosts are disconnected.")
        @OptionGroup var global: GlobalOptions
        @Argument(help: "The subsystem NQN.") var nqn: String

        func run() throws {
            var r = ControlRequest("subsystem.remove")
            r.subsystem = nqn
            try global.run(r)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List subsystems.")
        @OptionGroup var global: GlobalOptions

        func run() throws {
            try global.run(ControlRequest("subsystem.list")) { r in
                Table.print(["NQN", "NAMESPACES", "PORTS", "CONTROLLERS", "HOSTS"], (r.subsystems ?? []).map {
                    [$0.nqn, String($0.namespaces), $0.ports.map(String.init).joined(separator: ","), String($0.controllers),
                     $0.allowAnyHost ? "any" : ($0.allowedHosts.isEmpty ? "(none)" : $0.allowedHosts.joined(separator: ","))]
                })
            }
        }
    }
}

struct NamespaceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "namespace", abstract: "Add, remove, resize or list namespaces.",
                                                    subcommands: [Add.self, Remove.self, Resize.self, List.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Export a file, block device, clone, memory or null namespace.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "The subsystem NQN.") var subsystem: String
        @Option(help: "Namespace ID (default: the lowest free one).") var nsid: UInt32?
        @Option(help: "Backing file or block device.") var path: String?
        @Option(help: "A RAM namespace of this size (e.g. 1G) instead of --path.") var memory: String?
        @Option(help: "A null namespace of this size (reads zeros, discards writes; for benchmarks).") var null: String?
        @Option(help: "A clone namespace of this read-only base: every host writes to its own copy-on-write overlay.") var cloneOf: String?
        @Option(help: "Where a clone's per-host overlays live (default: under fathomd's --state-dir).") var overlayDir: String?
        @Flag(help: "Export write-protected (shared read-only datasets).") var readonly = false
        @Option(help: "UUID (default: derived from the subsystem NQN and NSID).") var uuid: String?
        @Option(help: "NGUID (default: derived).") var nguid: String?
        @Option(help: "Only this host sees the namespace (repeatable; default: every admitted host).") var visibleTo: [String] = []
        @Option(help: "ANA group (default 1; others must exist on a port, see `port ana`).") var anaGroup: UInt32?

        func validate() throws {
            guard [path, memory, null, cloneOf].compactMap({ $0 }).count == 1 else {
                throw ValidationError("give exactly one of --path, --memory, --null or --clone-of")
            }
        }

        func run() throws {
            var r = ControlRequest("namespace.add")
            r.subsystem = subsystem
            r.nsid = nsid
            r.path = path
            if let memory { r.backend = "memory"; r.size = memory }
            if let null { r.backend = "null"; r.size = null }
            if let cloneOf { r.backend = "clone"; r.path = cloneOf; r.overlayDirectory = overlayDir }
            r.readonly = readonly
            r.uuid = uuid
            r.nguid = nguid
            r.hosts = visibleTo
            r.anaGroup = anaGroup
            try global.run(r)
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a namespace; hosts see it go.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "The subsystem NQN.") var subsystem: String
        @Option(help: "Namespace ID.") var nsid: UInt32

        func run() throws {
            var r = ControlRequest("namespace.remove")
            r.subsystem = subsystem
            r.nsid = nsid
            try global.run(r)
        }
    }

    struct Resize: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pick up a new size: grow the backing file to --size, or take a device's or file's new size.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "The subsystem NQN.") var subsystem: String
        @Option(help: "Namespace ID.") var nsid: UInt32
        @Option(help: "New size (e.g. 20G); files only grow.") var size: String?

        func run() throws {
            var r = ControlRequest("namespace.resize")
            r.subsystem = subsystem
            r.nsid = nsid
            r.size = size
            try global.run(r)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List namespaces.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only this subsystem's.") var subsystem: String?

        func run() throws {
            var r = ControlRequest("namespace.list")
            r.subsystem = subsystem
            try global.run(r) { r in
                Table.print(["SUBSYSTEM", "NSID", "BACKEND", "SIZE", "BS", "RO", "PATH", "IO", "NGUID"], (r.namespaces ?? []).map {
                    [$0.subsystem, String($0.nsid), $0.backend, Table.bytes($0.bytes), String($0.blockSize), $0.readonly ? "yes" : "no",
                     $0.path ?? "-", $0.io ?? "-", $0.nguid]
                })
            }
        }
    }
}

struct HostCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "host", abstract: "Allow or deny a host NQN on a subsystem.",
                                                    subcommands: [Allow.self, Deny.self])

    /// A host on a subsystem.
    struct Selection: ParsableArguments {
        @Option(help: "The subsystem NQN.") var subsystem: String
        @Argument(help: "The host NQN.") var host: String

        func request(_ command: String) -> ControlRequest {
            var r = ControlRequest(command)
            r.subsystem = subsystem
            r.host = host
            return r
        }
    }

    struct Allow: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Let a host connect to a subsystem.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var selection: Selection
        func run() throws { try global.run(selection.request("host.allow")) }
    }

    struct Deny: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Take a host off a subsystem's list; its controllers are disconnected.")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var selection: Selection
        func run() throws { try global.run(selection.request("host.deny")) }
    }
}

struct PortCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "port", abstract: "Add, remove or list listening ports; set ANA states.",
                                                    subcommands: [Add.self, Remove.self, List.self, ANA.self])

    struct ANA: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ana",
            abstract: "Set an ANA group's state through a port (multipath hosts move I/O to other paths when it is not optimized).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Port ID.") var id: UInt16
        @Option(help: "ANA group, 1 to 128.") var group: UInt32
        @Option(help: "optimized, non-optimized, inaccessible, persistent-loss or change.") var state: String

        func run() throws {
            var r = ControlRequest("port.ana")
            r.port = id
            r.anaGroup = group
            r.state = state
            try global.run(r)
        }
    }

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Listen on a new address; with no --subsystem it serves discovery only (port 8009 by convention).")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Port ID (nvmetcli portid).") var id: UInt16
        @Option(help: "IPv4 or IPv6 address (0.0.0.0 or :: for every interface).") var address: String
        @Option(help: "TCP port.") var service: String = "4420"
        @Option(help: "A subsystem NQN reachable through it (repeatable).") var subsystem: [String] = []

        func run() throws {
            var r = ControlRequest("port.add")
            r.port = id
            r.address = address
            r.service = service
            r.subsystems = subsystem
            try global.run(r)
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop listening; hosts connected through it are disconnected.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Port ID.") var id: UInt16

        func run() throws {
            var r = ControlRequest("port.remove")
            r.port = id
            try global.run(r)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List ports.")
        @OptionGroup var global: GlobalOptions

        func run() throws {
            try global.run(ControlRequest("port.list")) { r in
                Table.print(["PORT", "FAMILY", "ADDRESS", "SERVICE", "SUBSYSTEMS", "ANA", "REFERRALS"], (r.ports ?? []).map {
                    [String($0.id), $0.family, $0.address, $0.service,
                     $0.subsystems.isEmpty ? "(discovery only)" : $0.subsystems.joined(separator: ","),
                     ($0.anaGroups ?? []).joined(separator: ","), $0.referrals.isEmpty ? "-" : $0.referrals.joined(separator: ",")]
                })
            }
        }
    }
}

struct ReferralCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "referral", abstract: "Point a port's discovery log at other discovery services.",
                                                    subcommands: [Add.self, Remove.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a referral to a port's discovery log.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "The port whose discovery log lists it.") var port: UInt16
        @Option(help: "A name for it.") var name: String
        @Option(help: "The other discovery service's address.") var address: String
        @Option(help: "Its TCP port.") var service: String = "8009"
        @Option(help: "The port ID it reports.") var portid: UInt16 = 0

        func run() throws {
            var r = ControlRequest("referral.add")
            r.port = port
            r.name = name
            r.address = address
            r.service = service
            r.referralPortID = portid
            try global.run(r)
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a referral.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "The port.") var port: UInt16
        @Option(help: "The referral's name.") var name: String

        func run() throws {
            var r = ControlRequest("referral.remove")
            r.port = port
            r.name = name
            try global.run(r)
        }
    }
}
