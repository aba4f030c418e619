import ArgumentParser
import FathomControl
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// fathomctl: live control of a running fathomd through its control socket.
@main
struct FathomCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fathomctl",
        abstract: "Control a running fathomd: subsystems, namespaces, hosts, ports, referrals, connections.",
        discussion: """
            Every change takes effect at once and is all-or-nothing; connected hosts are told \
            (Namespace Attribute Changed, Discovery Log Page Change). Changes live in the daemon \
            until `fathomctl save` writes them to its config file.
            """,
        subcommands: [Status.self, SubsystemCommand.self, NamespaceCommand.self, HostCommand.self, PortCommand.self,
                      ReferralCommand.self, Connections.self, Save.self, DatasetCommand.self, CloneCommand.self])

    /// `--socket PATH` and `--json` are accepted before the subcommand too (`fathomctl --json
    /// status`): they are moved behind it, where every leaf command declares them.
    static func main() {
        main(hoistGlobalOptions(Array(CommandLine.arguments.dropFirst())))
    }

    static func hoistGlobalOptions(_ args: [String]) -> [String] {
        var front: [String] = []
        var rest = args[...]
        while let first = rest.first, first.hasPrefix("--") {
            if first == "--json" || first.hasPrefix("--socket=") {
                front.append(first)
                rest = rest.dropFirst()
            } else if first == "--socket", rest.count >= 2 {
                front += rest.prefix(2)
                rest = rest.dropFirst(2)
            } else {
                break
            }
        }
        return Array(rest) + front
    }
}

struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "The daemon's control socket (default: $FATHOM_SOCKET, /run/fathom/fathomd.sock as root).")
    var socket: String = ControlSocketPath.default

    @Flag(name: .long, help: "Print the daemon's answer as JSON (for scripts).")
    var json = false

    /// Sends the request and prints the answer; exits 1 with the daemon's message on failure.
    func run(_ request: ControlRequest, render: (ControlResponse) -> Void = { _ in }) throws {
        let response: ControlResponse
        do {
            response = try ControlClient.send(request, socketPath: socket)
        } catch {
            throw ValidationError.failure("\(error)")
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            if let data = try? encoder.encode(response) { print(String(decoding: data, as: UTF8.self)) }
            if !response.ok { throw ExitCode(1) }
            return
        }
        guard response.ok else { throw ValidationError.failure(response.error ?? "the daemon refused the request") }
        for line in response.changes ?? [] { print(line) }
        if (response.changes ?? []).isEmpty && request.command.contains(".") && !request.command.hasSuffix(".list") {
            print("no change")
        }
        render(response)
    }
}

extension ValidationError {
    /// A failure message printed as "Error: ..." with exit code 64 would read as a usage
    /// error; this prints the message and exits 1.
    static func failure(_ message: String) -> Error {
        FileHandleStderr.print("fathomctl: \(message)")
        return ExitCode(1)
    }
}

enum FileHandleStderr {
    static func print(_ line: String) { fputs(line + "\n", stderr) }
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The daemon's version, uptime, ports and counts.")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try global.run(ControlRequest("status")) { r in
            guard let s = r.status else { return }
            print("fathomd \(s.version), pid \(s.pid), up \(s.uptimeSeconds) s")
            print("config:      \(s.configFile ?? "(none: demo)")")
            print("subsystems:  \(s.subsystems), namespaces: \(s.namespaces)")
            print("controllers: \(s.controllers), connections: \(s.connections)")
            if let pools = s.bufferPoolBytes {
                print("buffer pools: \(pools / (1024 * 1024)) MiB (kept for reuse; registered with io_uring, so resident)")
            }
            if let connections = s.multishotConnections, let arms = s.multishotArms, let left = s.multishotLeftForData {
                print("multishot recv: \(connections) connections, armed \(arms) times, left for write data \(left) times")
            }
            if let faults = s.majorPageFaults {
                print("major page faults: \(faults) since start (each a wait for the disk; on a reactor, a mapped page evicted since its scan)")
            }
            if let sent = s.zeroCopySends, let copied = s.zeroCopyCopied {
                print("zero-copy sends: \(sent), copied by the kernel anyway: \(copied)")
            }
            Table.print(["PORT", "FAMILY", "ADDRESS", "SERVICE", "SUBSYSTEMS"],
                        s.ports.map { [String($0.id), $0.family, $0.address, $0.service, $0.subsystems.isEmpty ? "(discovery only)" : $0.subsystems.joined(separator: ",")] })
        }
    }
}

struct Connections: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Connected controllers: host, address, queues, keep-alive, I/O counters.")
    @OptionGroup var global: GlobalOptions

    func run() throws {
        try global.run(ControlRequest("connections")) { r in
            Table.print(["CNTLID", "SUBSYSTEM", "HOST", "ADDRESS", "PORT", "IOQ", "KATO", "READS", "WRITES", "READ", "WRITTEN"],
                        (r.connections ?? []).map {
                            [String($0.controller), $0.subsystem, $0.host, $0.address, String($0.port), String($0.ioQueues),
                             "\($0.keepAliveMs / 1000)s", String($0.readCommands), String($0.writeCommands),
                             Table.bytes($0.bytesRead), Table.bytes($0.bytesWritten)]
                        })
        }
    }
}

struct Save: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write the running configuration (nvmetcli JSON) atomically.")
    @OptionGroup var global: GlobalOptions
    @Option(help: "Where to write (default: the file fathomd was started with).") var file: String?

    func run() throws {
        var request = ControlRequest("save")
        request.file = file
        try global.run(request) { r in print("saved \(r.saved ?? "")") }
    }
}
