import ArgumentParser
import FathomControl

struct CloneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "clone", abstract: "Per-host copy-on-write clones of clone namespaces: list, reset, delete.",
        subcommands: [List.self, Reset.self, Delete.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every host's clone: overlay file, bytes written, connected or not.")
        @OptionGroup var global: GlobalOptions
        @Option(help: "Only this subsystem's.") var subsystem: String?
        @Option(help: "Only this namespace's.") var nsid: UInt32?

        func run() throws {
            var r = ControlRequest("clone.list")
            r.subsystem = subsystem
            r.nsid = nsid
            try global.run(r) { r in
                Table.print(["SUBSYSTEM", "NSID", "HOST", "WRITTEN", "CONNECTED", "OVERLAY"], (r.clones ?? []).map {
                    [$0.subsystem, String($0.nsid), $0.host, Table.bytes($0.writtenBytes), $0.connected ? "yes" : "no",
                     $0.error.map { "error: \($0)" } ?? $0.overlay]
                })
            }
        }
    }

    /// Which clone: a host on a subsystem (as `host allow`) and the clone namespace.
    struct Selection: ParsableArguments {
        @OptionGroup var hostOnSubsystem: HostCommand.Selection
        @Option(help: "The clone namespace.") var nsid: UInt32

        func request(_ command: String) -> ControlRequest {
            var r = hostOnSubsystem.request(command)
            r.nsid = nsid
            return r
        }
    }

    struct Reset: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Forget a host's writes: its clone reads as the base again (host must be disconnected).")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var clone: Selection
        func run() throws { try global.run(clone.request("clone.reset")) }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a host's overlay files (host must be disconnected; a new clone is made on its next connect).")
        @OptionGroup var global: GlobalOptions
        @OptionGroup var clone: Selection
        func run() throws { try global.run(clone.request("clone.delete")) }
    }
}
