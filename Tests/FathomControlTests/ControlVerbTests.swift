import FathomConfig
import FathomControl
import FathomStorage
import FathomTestSupport
import FoundationEssentials
import NVMeInitiator
import NVMeWire
import XCTest
#if canImport(Glibc)
import Glibc
#endif

/// Every control verb through the real socket against a running target, checked from the
/// host's side with the Swift initiator.
final class ControlVerbTests: XCTestCase {
    var h: ControlHarness!

    override func setUpWithError() throws { h = try ControlHarness() }
    override func tearDown() { h.stop() }

    func testSocketIsOwnerOnly() {
        var st = stat()
        XCTAssertEqual(stat(h.control.path, &st), 0)
        XCTAssertEqual(st.st_mode & 0o777, 0o600)
    }

    func testStatusListsPortsAndCounts() throws {
        let r = try h.send("status")
        XCTAssertTrue(r.ok)
        XCTAssertEqual(r.status?.subsystems, 1)
        XCTAssertEqual(r.status?.namespaces, 1)
        XCTAssertEqual(r.status?.ports.first?.service, String(h.port))
        XCTAssertEqual(r.status?.configFile, h.configPath)
        // The buffer pools: one 1 MiB slab per size class used, per reactor.
        let before = r.status?.bufferPoolBytes ?? -1
        let c = try h.connect(host: ControlHarness.hostA)
        try c.write(lba: 0, data: pattern(4096, seed: 1))
        try c.write(lba: 64, data: pattern(65_536, seed: 2))
        let after = try h.send("status").status?.bufferPoolBytes ?? -1
        XCTAssertGreaterThanOrEqual(before, 0)
        XCTAssertGreaterThanOrEqual(after - before, 1 << 20, "a slab for the 4 KiB or 64 KiB buffers was mapped")
        XCTAssertEqual(after % (1 << 20), 0)
        // The host's admin and I/O queue read with multishot recv (the default) until the
        // 64 KiB write's R2T made the I/O queue leave it.
        let ms = try h.send("status").status
        XCTAssertEqual(ms?.multishotConnections, 2)
        XCTAssertGreaterThanOrEqual(ms?.multishotArms ?? 0, 2)
        XCTAssertGreaterThanOrEqual(ms?.multishotLeftForData ?? 0, 1)
        // The process's major faults, as the kernel counts them (the test process's: the
        // service runs in it).
        var usage = rusage()
        XCTAssertEqual(getrusage(RUSAGE_SELF.rawValue, &usage), 0)
        XCTAssertNotNil(ms?.majorPageFaults)
        XCTAssertLessThanOrEqual(ms?.majorPageFaults ?? .max, usage.ru_majflt)
    }

    func testNamespaceAddAppearsAndFailedAddChangesNothing() throws {
        let c = try h.connect(host: ControlHarness.hostA)
        let image = h.makeImage("ns2.img", mib: 4)
        let added = try h.send("namespace.add") { $0.subsystem = ControlHarness.nqn; $0.path = image; $0.nsid = 5 }
        XCTAssertTrue(added.ok, added.error ?? "")
        XCTAssertEqual(added.changes, ["subsystem \(ControlHarness.nqn) namespace 5 added"])
        let list = try c.identify(cns: 2)
        XCTAssertEqual(list.prefix(8), [1, 0, 0, 0, 5, 0, 0, 0])
        let data = pattern(4096, seed: 5)
        try c.write(nsid: 5, lba: 8, data: data)
        XCTAssertEqual(try c.read(nsid: 5, lba: 8, blocks: 8), data)

        // A namespace whose file is missing: refused, and nothing else changes.
        let before = h.service.currentDocument
        let bad = try h.send("namespace.add") { $0.subsystem = ControlHarness.nqn; $0.path = h.directory + "/missing.img" }
        XCTAssertFalse(bad.ok)
        XCTAssertTrue(bad.error?.contains("missing.img") ?? false, bad.error ?? "")
        XCTAssertEqual(h.service.currentDocument, before)
        XCTAssertEqual(try h.send("namespace.list").namespaces?.map(\.nsid), [1, 5])

        XCTAssertTrue(try h.send("namespace.remove") { $0.subsystem = ControlHarness.nqn; $0.nsid = 5 }.ok)
        XCTAssertEqual(try c.identify(cns: 2).prefix(8), [1, 0, 0, 0, 0, 0, 0, 0])
    }

    /// `namespace list` says how each file namespace's data moves, as it is now: a file on a
    /// disk filesystem through the ring and, where cached, its mapping; a tmpfs file through its
    /// mapping, and the same file back on pread once it shrank under the mapping.
    func testNamespaceListSaysHowDataMoves() throws {
        func io(_ nsid: UInt32) throws -> String? {
            try h.send("namespace.list").namespaces?.first { $0.nsid == nsid }?.io
        }
        if isPageCacheMappedFilesystem(holding: h.directory) {
            // The harness's image is sparse: holes read without the disk.
            XCTAssertEqual(try io(1), FileBackend.kernelReportsCachedPages
                           ? "buffered, cached reads from the mapping (8 of 8 MiB cached or holes, 0 reads)" : "buffered")
        }
        try XCTSkipUnless(filesystemType(holding: "/dev/shm") == "tmpfs", "/dev/shm is not a tmpfs here")
        let image = "/dev/shm/fathom-control-\(getpid()).img"
        let fd = open(image, O_CREAT | O_TRUNC | O_RDWR, 0o644)
        let data = pattern(1 << 20, seed: 8)
        XCTAssertEqual(pwrite(fd, data, data.count, 0), data.count)
        Glibc.close(fd)
        defer { unlink(image) }
        XCTAssertTrue(try h.send("namespace.add") { $0.subsystem = ControlHarness.nqn; $0.path = image; $0.nsid = 6 }.ok)
        XCTAssertEqual(try io(6), "tmpfs mapping (reads, writes)")
        let c = try h.connect(host: ControlHarness.hostA)
        XCTAssertEqual(try c.read(nsid: 6, lba: 16, blocks: 8), Array(data[8192..<12288]))
        XCTAssertEqual(truncate(image, 64 << 10), 0)
        XCTAssertEqual(try c.read(nsid: 6, lba: 1024, blocks: 8), [UInt8](repeating: 0, count: 4096), "past the new end")
        XCTAssertEqual(try io(6), "inline", "the mapping was given up")
        XCTAssertTrue(try h.send("namespace.remove") { $0.subsystem = ControlHarness.nqn; $0.nsid = 6 }.ok)
    }

    func testResizeGrowsTheFileAndRefusesToShrink() throws {
        let grow = try h.send("namespace.resize") { $0.subsystem = ControlHarness.nqn; $0.nsid = 1; $0.size = "16M" }
        XCTAssertTrue(grow.ok, grow.error ?? "")
        XCTAssertEqual(try h.send("namespace.list").namespaces?.first?.bytes, 16 << 20)
        let shrink = try h.send("namespace.resize") { $0.subsystem = ControlHarness.nqn; $0.nsid = 1; $0.size = "4M" }
        XCTAssertFalse(shrink.ok)
        XCTAssertTrue(shrink.error?.contains("shrinking would discard data") ?? false)
    }

    /// Allow lets a host in; deny ends that host's controller and refuses it, while another
    /// host's controller and I/O carry on untouched.
    func testHostAllowAndDenyLeaveOtherHostsConnected() throws {
        let a = try h.connect(host: ControlHarness.hostA)
        let aID = a.controllerID
        XCTAssertThrowsError(try h.connect(host: ControlHarness.hostB))
        XCTAssertTrue(try h.send("host.allow") { $0.subsystem = ControlHarness.nqn; $0.host = ControlHarness.hostB }.ok)
        let b = try h.connect(host: ControlHarness.hostB)
        XCTAssertTrue(try h.send("host.deny") { $0.subsystem = ControlHarness.nqn; $0.host = ControlHarness.hostB }.ok)
        XCTAssertTrue(h.eventually { h.server.target.controller(b.controllerID) == nil })
        XCTAssertTrue(h.eventually { (try? b.read(lba: 0, blocks: 1)) == nil }, "host B's queues are closed")
        XCTAssertThrowsError(try h.connect(host: ControlHarness.hostB))
        // Host A never noticed.
        XCTAssertNotNil(h.server.target.controller(aID))
        let data = pattern(512, seed: 9)
        try a.write(lba: 3, data: data)
        XCTAssertEqual(try a.read(lba: 3, blocks: 1), data)
    }

    func testSubsystemAddAndRemove() throws {
        let nqn = "nqn.2026-11.io.fathom.test:second"
        let r = try h.send("subsystem.add") { $0.subsystem = nqn; $0.allowAnyHost = true; $0.ports = [1] }
        XCTAssertTrue(r.ok, r.error ?? "")
        let image = h.makeImage("second.img", mib: 2)
        XCTAssertTrue(try h.send("namespace.add") { $0.subsystem = nqn; $0.path = image; $0.readonly = true }.ok)
        let c = try h.connect(host: ControlHarness.hostB, subsystem: nqn)
        XCTAssertEqual(try c.read(lba: 0, blocks: 1), [UInt8](repeating: 0, count: 512))
        XCTAssertFalse(try h.send("subsystem.add") { $0.subsystem = nqn }.ok, "a second add of the same NQN is refused")
        XCTAssertTrue(try h.send("subsystem.remove") { $0.subsystem = nqn }.ok)
        XCTAssertTrue(h.eventually { h.server.target.controller(c.controllerID) == nil })
        XCTAssertThrowsError(try h.connect(host: ControlHarness.hostB, subsystem: nqn))
        XCTAssertEqual(try h.send("subsystem.list").subsystems?.map(\.nqn), [ControlHarness.nqn])
    }

    /// A discovery-only port lists the subsystems of the other ports and its referrals; a
    /// persistent discovery controller hears about changes; port remove stops the listener.
    func testDiscoveryPortReferralsAndChangeEvent() throws {
        XCTAssertTrue(try h.send("port.add") { $0.port = 2; $0.address = "127.0.0.1"; $0.service = "0" }.ok)
        guard let discoveryPort = try h.send("port.list").ports?.first(where: { $0.id == 2 }).flatMap({ UInt16($0.service) }) else {
            return XCTFail("port 2 not listed")
        }
        let d = try HostController(host: "127.0.0.1", port: discoveryPort, subsystemNQN: NQN.discovery, hostNQN: ControlHarness.hostA)
        try d.enable()
        let log = try d.discoveryLog()
        XCTAssertEqual(log.entries.map(\.subsystemType), [.nvm, .currentDiscovery])
        XCTAssertEqual(log.entries.first?.subsystemNQN, ControlHarness.nqn)
        XCTAssertEqual(log.entries.first?.serviceID, String(h.port))
        // Host B may not connect to the subsystem, so its log does not show it.
        let other = try HostController(host: "127.0.0.1", port: discoveryPort, subsystemNQN: NQN.discovery, hostNQN: ControlHarness.hostB)
        try other.enable()
        XCTAssertEqual(try other.discoveryLog().entries.map(\.subsystemType), [.currentDiscovery])

        // Persistent discovery: enable the notice, hold an AER, change the referrals.
        _ = try d.setFeature(0x0B, 1 << 31)
        let aer = try d.admin.submit(SubmissionQueueEntry(opcode: 0x0C, commandID: 900))
        XCTAssertTrue(try h.send("referral.add") { $0.port = 2; $0.name = "peer"; $0.address = "10.1.2.3"; $0.service = "8009" }.ok)
        let event = try d.admin.wait(aer)
        XCTAssertEqual(event.cqe.dw0, 0x0070_F002)
        let after = try d.discoveryLog()
        XCTAssertGreaterThan(after.generation, log.generation)
        XCTAssertEqual(after.entries.map(\.subsystemType), [.nvm, .referral, .currentDiscovery])
        XCTAssertEqual(after.entries[1].address, "10.1.2.3")
        XCTAssertEqual(after.entries[1].serviceID, "8009")

        XCTAssertTrue(try h.send("referral.remove") { $0.port = 2; $0.name = "peer" }.ok)
        XCTAssertTrue(try h.send("port.remove") { $0.port = 2 }.ok)
        XCTAssertTrue(h.eventually {
            (try? HostController(host: "127.0.0.1", port: discoveryPort, subsystemNQN: NQN.discovery, hostNQN: ControlHarness.hostA)) == nil
        })
    }

    func testConnectionsReportHostsAndCounters() throws {
        let a = try h.connect(host: ControlHarness.hostA, queues: 2)
        try a.write(lba: 0, data: pattern(4096, seed: 1))
        _ = try a.read(lba: 0, blocks: 8)
        let list = try h.send("connections").connections ?? []
        XCTAssertEqual(list.count, 1)
        XCTAssertEqual(list.first?.host, ControlHarness.hostA)
        XCTAssertEqual(list.first?.ioQueues, 2)
        XCTAssertEqual(list.first?.writeCommands, 1)
        XCTAssertEqual(list.first?.bytesRead, 4096)
    }

    /// save writes what runs; loading the file gives the same configuration.
    func testSaveWritesTheRunningConfigurationBack() throws {
        let image = h.makeImage("saved.img", mib: 2)
        XCTAssertTrue(try h.send("namespace.add") { $0.subsystem = ControlHarness.nqn; $0.path = image; $0.nsid = 2 }.ok)
        XCTAssertTrue(try h.send("host.allow") { $0.subsystem = ControlHarness.nqn; $0.host = ControlHarness.hostB }.ok)
        let r = try h.send("save")
        XCTAssertEqual(r.saved, h.configPath)
        let reloaded = try TargetConfig.load(path: h.configPath)
        XCTAssertEqual(reloaded, h.server.runningConfig)
        XCTAssertEqual(reloaded.subsystems.first?.allowedHosts, [ControlHarness.hostA, ControlHarness.hostB])
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.configPath + ".tmp-\(getpid())"))
    }

    func testUnknownCommandAndMissingArgumentsSayWhatIsWrong() throws {
        XCTAssertEqual(try h.send("frobnicate").error, "unknown command \"frobnicate\"")
        XCTAssertEqual(try h.send("namespace.remove") { $0.subsystem = ControlHarness.nqn }.error, "missing --nsid")
        XCTAssertEqual(try h.send("host.allow") { $0.subsystem = "nqn.2026-11.x:none"; $0.host = ControlHarness.hostB }.error,
                       "no subsystem nqn.2026-11.x:none (fathomctl subsystem list shows them)")
        let invalid = try h.send("host.allow") { $0.subsystem = ControlHarness.nqn; $0.host = "not-an-nqn" }
        XCTAssertTrue(invalid.error?.contains("allowed_hosts") ?? false, invalid.error ?? "")
    }
}

/// SIGHUP's path: the file changes, only the difference is applied.
final class ControlReloadTests: XCTestCase {
    var h: ControlHarness!

    override func setUpWithError() throws { h = try ControlHarness() }
    override func tearDown() { h.stop() }

    private func edit(_ change: (inout NvmetcliConfig) -> Void) throws {
        var doc = try TargetConfig.loadRaw(path: h.configPath)
        change(&doc)
        FileManager.default.createFile(atPath: h.configPath, contents: Data(doc.encoded()))
    }

    func testReloadKeepsUnaffectedHostsConnected() throws {
        let a = try h.connect(host: ControlHarness.hostA)
        try edit { doc in
            doc.subsystems[0].allowed_hosts = [ControlHarness.hostA, ControlHarness.hostB]
            doc.ports.append(.init(addr: .init(adrfam: "ipv4", traddr: "127.0.0.1", trsvcid: FlexibleValue("0")), portid: FlexibleValue("3"),
                                   subsystems: [ControlHarness.nqn]))
        }
        let notes = try h.service.reload(path: h.configPath)
        XCTAssertTrue(notes.contains("subsystem \(ControlHarness.nqn): host access changed"), "\(notes)")
        XCTAssertTrue(notes.contains { $0.hasPrefix("port 3 ") && $0.hasSuffix(" added") }, "\(notes)")
        XCTAssertNotNil(h.server.target.controller(a.controllerID))
        let data = pattern(1024, seed: 3)
        try a.write(lba: 100, data: data)
        XCTAssertEqual(try a.read(lba: 100, blocks: 2), data)
        let b = try h.connect(host: ControlHarness.hostB, port: h.server.boundPorts[1])
        XCTAssertEqual(try b.read(lba: 100, blocks: 2), data)
        XCTAssertEqual(try h.send("status").status?.ports.count, 2)
    }

    /// Identity attributes (cntlid range, qid_max) take effect; changing them recreates the
    /// subsystem, which disconnects its hosts (they cached the old identity).
    func testIdentityChangeRecreatesTheSubsystemWithItsLimits() throws {
        let a = try h.connect(host: ControlHarness.hostA)
        try edit { doc in
            doc.subsystems[0].attr = ["allow_any_host": FlexibleValue("0"), "cntlid_min": FlexibleValue("100"),
                                      "cntlid_max": FlexibleValue("101"), "qid_max": FlexibleValue("2")]
        }
        let notes = try h.service.reload(path: h.configPath)
        XCTAssertTrue(notes.contains("subsystem \(ControlHarness.nqn) recreated (its identity changed)"), "\(notes)")
        XCTAssertNil(h.server.target.controller(a.controllerID))
        let c = try h.connect(host: ControlHarness.hostA, queues: 0)
        XCTAssertTrue((100...101).contains(c.controllerID), "cntlid \(c.controllerID) is in cntlid_min...cntlid_max")
        let granted = try c.setFeature(0x07, 7 << 16 | 7)
        XCTAssertEqual(granted.cqe.dw0, 1 << 16 | 1, "qid_max 2 grants 2 queues (0-based 1)")
    }

    func testFailedReloadChangesNothing() throws {
        let a = try h.connect(host: ControlHarness.hostA)
        try edit { doc in
            doc.subsystems[0].allowed_hosts = []
            doc.subsystems[0].namespaces?.append(.init(nsid: FlexibleValue("2"), device: .init(path: "/nonexistent/x.img")))
        }
        XCTAssertThrowsError(try h.service.reload(path: h.configPath))
        XCTAssertNotNil(h.server.target.controller(a.controllerID))
        XCTAssertEqual(h.server.runningConfig.subsystems[0].allowedHosts, [ControlHarness.hostA])
        XCTAssertEqual(h.service.currentDocument.subsystems[0].allowed_hosts, [ControlHarness.hostA])
    }
}

/// What reaches the socket is input like any other: garbage and absurd values get an
/// answer that says what is wrong, and the daemon carries on.
final class ControlBadInputTests: XCTestCase {
    func testGarbageAndAbsurdSizesAreRefused() throws {
        let h = try ControlHarness()
        defer { h.stop() }
        // Not JSON at all, through a raw socket.
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &sa.sun_path) { $0.copyBytes(from: Array(h.control.path.utf8)) }
        XCTAssertEqual(withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }, 0)
        _ = Array("{{{ not json\n".utf8).withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        close(fd)
        XCTAssertTrue(String(decoding: buffer.prefix(max(0, n)), as: UTF8.self).contains("not valid JSON"))
        // Sizes beyond any disk: refused, not trapped.
        let huge = try h.send("namespace.add") { $0.subsystem = ControlHarness.nqn; $0.backend = "memory"; $0.size = "18446744073709551615" }
        XCTAssertFalse(huge.ok)
        XCTAssertTrue(huge.error?.contains("from 4K to 1P") ?? false, huge.error ?? "")
        let grow = try h.send("namespace.resize") { $0.subsystem = ControlHarness.nqn; $0.nsid = 1; $0.size = "18446744073709551615" }
        XCTAssertFalse(grow.ok)
        XCTAssertTrue(try h.send("status").ok, "the daemon still answers")
    }
}
