import ArgumentParser
import Foundation
import Histogram
import NVMeInitiator
import NVMeWire

@main
struct FathomPerf: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fathom-perf",
        abstract: "Load generator for NVMe/TCP targets (in the style of spdk_nvme_perf), and the bare io_uring baseline.",
        subcommands: [Run.self, Bare.self],
        defaultSubcommand: Run.self)
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Drive a target and report IOPS, bandwidth and latency.")

    @Option(help: "Target address.") var address = "127.0.0.1"
    @Option(help: "Target TCP port.") var port: UInt16 = 4420
    @Option(help: "Subsystem NQN.") var nqn = "nqn.2026-11.io.fathom:demo"
    @Option(help: "Namespace ID.") var nsid: UInt32 = 1
    @Option(name: [.customShort("q"), .long], help: "Queue depth per queue.") var queueDepth = 32
    @Option(name: [.customShort("o"), .long], help: "I/O size in bytes.") var ioSize = 4096
    @Option(name: [.customShort("w"), .long], help: "randread, read, randwrite, write or randrw.") var pattern = "randread"
    @Option(name: [.customShort("M"), .long], help: "Read percentage for randrw.") var readPercent = 70
    @Option(name: [.customShort("t"), .long], help: "Measured seconds.") var time = 10.0
    @Option(help: "Warm-up seconds before measuring.") var warmup = 1.0
    @Option(help: "I/O queues (one TCP connection and one thread each).") var queues = 1
    @Flag(help: "Write a verifiable pattern, then read it back and check every block.") var verify = false
    @Flag(help: "Talk to the bare responder: ICReq then capsules, no Connect (reads only).") var bare = false
    @Flag(help: "Print one JSON line instead of text.") var json = false

    func run() throws {
        guard let p = Workload.Pattern(rawValue: pattern) else { throw ValidationError("--pattern must be one of \(Workload.Pattern.allCases.map(\.rawValue))") }
        var workload = Workload(pattern: p, ioSize: ioSize, queueDepth: queueDepth, nsid: nsid, blockSize: 512, blocks: 1 << 21,
                                readPercent: readPercent, verify: verify)
        var keep: [AnyObject] = []
        var queuePairs: [QueuePair] = []
        if bare {
            for q in 0..<queues { queuePairs.append(try QueuePair(host: address, port: port, queueID: UInt16(q + 1), inCapsuleLimit: 16384)) }
        } else {
            let c = try HostController(host: address, port: port, subsystemNQN: nqn, keepAliveMs: 0)
            try c.enable()
            let ns = try c.identify(cns: 0, nsid: nsid)
            ns.withUnsafeBytes { b in
                workload.blocks = b.baseAddress!.le64(0)
                workload.blockSize = 1 << Int(b.baseAddress!.le8(128 + 2 + 4 * Int(b.baseAddress!.le8(26) & 0xF)))
            }
            let ioccsz = try c.identify(cns: 1).withUnsafeBytes { Int($0.baseAddress!.le32(1792)) * 16 - 64 }
            try c.createIOQueues(queues, queueSize: max(queueDepth + 1, 32), inCapsuleLimit: ioccsz)
            queuePairs = c.ioQueues
            keep.append(c)
        }
        guard ioSize % workload.blockSize == 0, ioSize > 0 else { throw ValidationError("--io-size must be a multiple of the \(workload.blockSize)-byte block") }
        if verify {
            // Fill the range first (one sequential write pass), then read it back checking.
            var fill = workload
            fill.pattern = .write
            fill.verify = true
            let span = min(workload.slots, 4096)
            fill.blocks = span * UInt64(workload.blocksPerIO)
            workload.blocks = fill.blocks
            let w = PerfWorker(fd: queuePairs[0].socket.fd, workload: fill, inCapsuleLimit: queuePairs[0].inCapsuleLimit,
                               maxH2CData: queuePairs[0].maxH2CData, seed: 0, tag: 0xF417)
            w.runCount(Int(span))
            if w.errors > 0 { throw PerfError("fill failed: \(w.errorText)") }
            workload.pattern = workload.pattern == .read || workload.pattern == .write ? .read : .randread
        }
        let workers = queuePairs.enumerated().map { k, q in
            PerfWorker(fd: q.socket.fd, workload: workload, inCapsuleLimit: q.inCapsuleLimit, maxH2CData: q.maxH2CData,
                       seed: UInt64(k + 1) &* 0x9E37_79B9, tag: 0xF417)
        }
        let duration = UInt64(time * 1e9), warm = UInt64(warmup * 1e9)
        let done = DispatchGroup()
        for w in workers {
            done.enter()
            let thread = Thread {
                w.run(durationNs: duration, warmupNs: warm)
                done.leave()
            }
            thread.start()
        }
        done.wait()
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        var ops: UInt64 = 0, bytes: UInt64 = 0, errors: UInt64 = 0, verifyFailures: UInt64 = 0
        var firstError = ""
        for w in workers {
            histogram.add(w.histogram)
            ops += w.completed
            bytes += w.bytes
            errors += w.errors
            verifyFailures += w.verifyFailures
            if firstError.isEmpty { firstError = w.errorText }
        }
        let seconds = time
        let iops = Double(ops) / seconds
        let mibs = Double(bytes) / seconds / 1_048_576
        func us(_ p: Double) -> Double { Double(histogram.valueAtPercentile(p)) / 1000 }
        if json {
            print(#"{"pattern":"\#(pattern)","io_size":\#(ioSize),"queue_depth":\#(queueDepth),"queues":\#(queues),"iops":\#(Int(iops)),"mib_s":\#(String(format: "%.1f", mibs)),"lat_avg_us":\#(String(format: "%.1f", histogram.mean / 1000)),"lat_p50_us":\#(us(50)),"lat_p99_us":\#(us(99)),"lat_p999_us":\#(us(99.9)),"errors":\#(errors),"verify_failures":\#(verifyFailures)}"#)
        } else {
            print("\(pattern) \(ioSize) B, QD \(queueDepth) x \(queues) queue(s), \(time) s:")
            print(String(format: "  %.0f IOPS, %.1f MiB/s", iops, mibs))
            print(String(format: "  latency us: avg %.1f  p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f", histogram.mean / 1000, us(50), us(99), us(99.9),
                         Double(histogram.max) / 1000))
            if errors > 0 || verifyFailures > 0 { print("  errors \(errors), verify failures \(verifyFailures): \(firstError)") }
        }
        withExtendedLifetime(keep) {}
        if errors > 0 || verifyFailures > 0 { throw ExitCode(1) }
    }
}

struct Bare: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bare-responder",
                                                    abstract: "Serve NVMe/TCP framing with no NVMe work: the transport baseline.")
    @Option(help: "TCP port on 127.0.0.1.") var port: UInt16 = 4430

    func run() throws {
        let r = try BareResponder(port: port)
        r.run()
    }
}
