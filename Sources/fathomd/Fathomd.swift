import ArgumentParser
import FathomConfig
import FathomControl
import FathomReactor
import FathomStorage
import FathomTarget
import Logging
#if canImport(Glibc)
import Glibc
#endif

@main
struct Fathomd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fathomd",
        abstract: "Fathom: an NVMe-over-TCP target that serves files and block devices through io_uring.",
        discussion: """
            Run with --config FILE (the JSON that `nvmetcli save` writes) or with --demo, which exports a \
            sparse 1 GiB image on 127.0.0.1:4420 as \(TargetConfig.demoNQN).
            fathomctl changes the running target through the control socket (--control-socket). \
            SIGHUP re-reads the configuration file and applies only the difference: hosts the new \
            configuration still admits keep their connections. SIGINT or SIGTERM stops the daemon cleanly.
            """)

    @Option(name: .long, help: "nvmetcli JSON configuration file.")
    var config: String?

    @Option(name: .long, help: "Check a configuration file (syntax, values, backing stores) and exit: 0 when it is usable.")
    var checkConfig: String?

    @Flag(name: .long, help: "Serve a demo namespace (a sparse image) on loopback, no configuration needed.")
    var demo = false

    @Option(name: .long, help: "Backing image of the demo namespace (created sparse if missing).")
    var demoImage = "/var/tmp/fathom-demo.img"

    @Option(name: .customLong("demo-size-mib"), help: "Size of a newly created demo image, in MiB.")
    var demoSizeMiB: UInt64 = 1024

    @Option(name: .long, help: "Address and port of the demo listener.")
    var demoListen = "127.0.0.1:4420"

    @Option(name: .long, help: "Reactor threads, each with its own io_uring (default: one per CPU).")
    var reactors: Int?

    @Option(name: .long, help: "Pin reactors to these CPUs, e.g. 2,3 (reactor k runs on the k-th, round robin).")
    var cpuAffinity: String?

    @Option(name: .customLong("max-h2c-data-kib"), help: "Largest H2CData PDU the host may send, in KiB (ICResp MAXH2CDATA).")
    var maxH2CDataKiB: Int = 128

    @Option(name: .customLong("in-capsule-kib"), help: "In-capsule data size of I/O queues, in KiB (IOCCSZ).")
    var inCapsuleKiB: Int = 16

    @Option(name: .long, help: "Connections accepted at once, all ports together.")
    var maxConnections: Int = 4096

    @Option(name: .long, help: "Queues (admin + I/O) one host NQN may have connected at once.")
    var maxQueuesPerHost: Int = 1024

    @Option(name: .long, help: "Controllers one subsystem may have at once (a subsystem's attr max_controllers may lower it).")
    var maxControllersPerSubsystem: Int = 1024

    @Option(name: .long, help: "Zero-copy sends of read data (SENDMSG_ZC): auto (used until the kernel reports it copied, as on loopback), always, never.")
    var sendZc: String = "auto"

    @Option(name: .customLong("send-zc-min-kib"), help: "Least read data in one send, in KiB, for it to go zero-copy.")
    var sendZcMinKiB: Int = 64

    @Option(name: .customLong("busy-poll-us"), help: "Microseconds a reactor keeps polling for more work before it sleeps (0: sleeps at once). Lowers latency at low queue depth for CPU; idle reactors still sleep.")
    var busyPollMicroseconds: Int = 0

    @Option(name: .long, help: "How connections read their socket: multishot (one armed recv per connection into a ring of provided buffers; falls back by itself on kernels without it) or single (one recv per read).")
    var recv: String = "multishot"

    @Option(name: .long, help: "Namespaces whose file is on tmpfs (/dev/shm): mapped (writes copied into the file's pages, reads sent from them when the file has no holes; one copy each) or copy (pread and pwrite through a buffer).")
    var tmpfsIO: String = "mapped"

    @Option(name: .long, help: "Files on disk filesystems read through the page cache: mapped (reads of ranges wholly in the page cache sent from the file's mapping, one copy; the rest through io_uring) or copy (every read through io_uring into a buffer).")
    var pageCacheReads: String = "mapped"

    @Option(name: .long, help: "Directory for state that survives restarts (reservations with PTPL).")
    var stateDir = "/var/lib/fathom"

    @Option(name: .long, help: "Control socket for fathomctl (owner-only; default: $FATHOM_SOCKET, /run/fathom/fathomd.sock as root, else $XDG_RUNTIME_DIR/fathomd.sock or /tmp/fathomd-UID.sock). \"none\" disables it.")
    var controlSocket: String = ControlSocketPath.default

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    func validate() throws {
        if checkConfig != nil { return }
        guard ZeroCopySendPolicy(rawValue: sendZc) != nil else {
            throw ValidationError("--send-zc must be one of: \(ZeroCopySendPolicy.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard ReceiveMode(rawValue: recv) != nil else {
            throw ValidationError("--recv must be one of: \(ReceiveMode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard FileMappingMode(rawValue: tmpfsIO) != nil else {
            throw ValidationError("--tmpfs-io must be one of: \(FileMappingMode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard FileMappingMode(rawValue: pageCacheReads) != nil else {
            throw ValidationError("--page-cache-reads must be one of: \(FileMappingMode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard sendZcMinKiB >= 1 else { throw ValidationError("--send-zc-min-kib must be at least 1") }
        guard (0...10_000).contains(busyPollMicroseconds) else { throw ValidationError("--busy-poll-us must be between 0 and 10000") }
        if config != nil && demo { throw ValidationError("--config and --demo exclude each other") }
        if config == nil && !demo { throw ValidationError("give --config FILE (an nvmetcli JSON file) or --demo") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level \(logLevel) is not one of trace, debug, info, notice, warning, error, critical") }
        if let list = cpuAffinity, list.split(separator: ",").contains(where: { Int($0) == nil }) {
            throw ValidationError("--cpu-affinity \(list) is not a comma-separated list of CPU numbers")
        }
        guard (4...4096).contains(maxH2CDataKiB) else { throw ValidationError("--max-h2c-data-kib must be between 4 and 4096") }
        guard maxConnections >= 1, maxQueuesPerHost >= 2, maxControllersPerSubsystem >= 1 else {
            throw ValidationError("--max-connections must be at least 1, --max-queues-per-host at least 2, --max-controllers-per-subsystem at least 1")
        }
        guard (0...512).contains(inCapsuleKiB) else { throw ValidationError("--in-capsule-kib must be between 0 and 512 (the largest transfer)") }
    }

    func run() throws {
        if let path = checkConfig { return check(path) }
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel = level
            return h
        }
        let logger = Logger(label: "fathomd")

        let targetConfig: TargetConfig
        let document: NvmetcliConfig
        if let path = config {
            do {
                document = try TargetConfig.loadRaw(path: path)
                targetConfig = try TargetConfig.validate(document)
            } catch {
                fail("\(path): \(error)")
            }
        } else {
            let parts = demoListen.split(separator: ":")
            guard parts.count == 2, let port = UInt16(parts[1]) else { fail("--demo-listen \(demoListen) is not ADDRESS:PORT") }
            do {
                try FileBackend.createSparse(path: demoImage, bytes: demoSizeMiB * 1024 * 1024)
            } catch {
                fail("demo image: \(error)")
            }
            document = TargetConfig.demoDocument(imagePath: demoImage, address: String(parts[0]), port: port)
            targetConfig = TargetConfig.demo(imagePath: demoImage, address: String(parts[0]), port: port)
        }

        var settings = TargetSettings()
        settings.maxH2CData = maxH2CDataKiB * 1024
        settings.ioInCapsuleDataSize = inCapsuleKiB * 1024
        settings.maxConnections = maxConnections
        settings.maxQueuesPerHost = maxQueuesPerHost
        settings.maxControllersPerSubsystem = maxControllersPerSubsystem
        settings.zeroCopySend = ZeroCopySendPolicy(rawValue: sendZc) ?? .auto
        settings.zeroCopySendMinBytes = sendZcMinKiB * 1024
        settings.busyPollMicroseconds = busyPollMicroseconds
        settings.receiveMode = ReceiveMode(rawValue: recv) ?? .multishot
        settings.tmpfsIO = FileMappingMode(rawValue: tmpfsIO) ?? .mapped
        settings.pageCacheReads = FileMappingMode(rawValue: pageCacheReads) ?? .mapped
        if mkdir(stateDir, 0o700) == 0 || errno == EEXIST, access(stateDir, W_OK) == 0 {
            settings.stateDirectory = stateDir
        } else {
            logger.warning("state directory \(stateDir) is not writable: reservations will not persist through power loss (PTPL)")
        }

        // Signals are taken synchronously by this thread; reactor threads inherit the mask.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGHUP)
        pthread_sigmask(SIG_BLOCK, &signals, nil)
        // Also give them a (never run) handler: while the main thread sits in sigwait the
        // kernel shows them unblocked, and tools that check whether SIGHUP would kill the
        // daemon (before sending it) look for a handler.
        for s in [SIGINT, SIGTERM, SIGHUP] { signal(s, { _ in }) }

        let server: FathomServer
        do {
            server = try FathomServer(config: targetConfig, settings: settings,
                                      reactorCount: reactors ?? Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))),
                                      cpus: cpuAffinity.map { $0.split(separator: ",").compactMap { Int($0) } }, logger: logger)
            try server.start()
        } catch {
            fail("\(error)")
        }
        let service = ControlService(server: server, document: document, configPath: config)
        var controlServer: ControlServer? = nil
        if controlSocket != "none" {
            do {
                let c = try ControlServer(path: controlSocket, handler: service.handle)
                try c.start()
                controlServer = c
                logger.info("control socket ready", metadata: ["path": "\(controlSocket)"])
            } catch {
                server.stop()
                fail("\(error)")
            }
        }
        SystemdNotify.send("READY=1\nSTATUS=serving \(targetConfig.subsystems.count) subsystem(s) on \(server.boundPorts.map(String.init).joined(separator: ","))")
        if demo {
            let parts = demoListen.split(separator: ":")
            logger.notice("demo ready: nvme connect -t tcp -a \(parts[0]) -s \(parts[1]) -n \(TargetConfig.demoNQN)")
        }
        var received: Int32 = 0
        while true {
            sigwait(&signals, &received)
            guard received == SIGHUP else { break }
            // SIGHUP: re-read the configuration and apply namespace changes live.
            guard let path = config else {
                logger.notice("SIGHUP ignored: the demo has no configuration file to reload")
                continue
            }
            SystemdNotify.send("RELOADING=1")
            defer { SystemdNotify.send("READY=1") }
            do {
                let notes = try service.reload(path: path)
                if notes.isEmpty { logger.notice("reload: no changes") }
            } catch {
                logger.error("reload failed, the running configuration is unchanged: \(error)")
            }
        }
        logger.notice("signal \(received) received, stopping")
        SystemdNotify.send("STOPPING=1")
        controlServer?.stop()
        server.stop()
        logger.notice("stopped")
    }

    /// --check-config: everything short of listening. Backing files and devices must exist
    /// and be of a usable kind (they are not opened for writing here).
    private func check(_ path: String) {
        let c: TargetConfig
        do {
            c = try TargetConfig.load(path: path)
        } catch {
            fail("\(path): \(error)")
        }
        var problems: [String] = []
        for s in c.subsystems {
            for ns in s.namespaces where ns.backend == .file || ns.backend == .clone {
                var st = stat()
                if stat(ns.path, &st) != 0 {
                    problems.append("subsystem \(s.nqn) namespace \(ns.nsid): device.path = \"\(ns.path)\": \(String(cString: strerror(errno)))")
                } else if (st.st_mode & S_IFMT) != S_IFREG && (st.st_mode & S_IFMT) != S_IFBLK {
                    problems.append("subsystem \(s.nqn) namespace \(ns.nsid): device.path = \"\(ns.path)\": not a regular file or block device")
                } else if access(ns.path, ns.readOnly || ns.backend == .clone ? R_OK : R_OK | W_OK) != 0 {
                    let mode = ns.readOnly || ns.backend == .clone ? "read" : "read and write"
                    problems.append("subsystem \(s.nqn) namespace \(ns.nsid): device.path = \"\(ns.path)\": \(String(cString: strerror(errno))) (needs \(mode) access)")
                }
            }
        }
        if !problems.isEmpty {
            var stderr = StandardError()
            for p in problems { print("fathomd: \(path): \(p)", to: &stderr) }
            Glibc.exit(1)
        }
        let namespaces = c.subsystems.reduce(0) { $0 + $1.namespaces.count }
        print("\(path): OK: \(c.listeners.count) port(s), \(c.subsystems.count) subsystem(s), \(namespaces) namespace(s)")
    }

    private func fail(_ message: String) -> Never {
        var stderr = StandardError()
        print("fathomd: \(message)", to: &stderr)
        Glibc.exit(1)
    }
}

struct StandardError: TextOutputStream {
    mutating func write(_ string: String) { fputs(string, Glibc.stderr) }
}
