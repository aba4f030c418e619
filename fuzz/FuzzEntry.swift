// libFuzzer entry point over Fathom's decoders and command execution (built by
// scripts/fuzz.sh with -sanitize=fuzzer,address; not part of the SwiftPM package).
// The first input byte picks the target; the rest is the input.
#if canImport(Glibc)
import Glibc
#endif

final class FuzzBackend: NamespaceBackend {
    let blockCount: UInt64 = 1 << 20
    let blockSizeShift: UInt8 = 9
    func allocatedBlocks() -> UInt64 { 1 << 10 }
    var deallocatedReadsZero: Bool { true }
    var preferredWriteBlocks: UInt16 { 8 }
}

let fuzzNQN = "nqn.2026-11.io.fathom.fuzz:a"
let fuzzHost = "nqn.2014-08.org.nvmexpress:uuid:6d2e1c70-3f4b-4e25-9a3d-0d1c2b3a4f50"
let fuzzPort = Port(id: 1, address: "0.0.0.0", serviceID: "4420", isIPv6: false, subsystemNQNs: [fuzzNQN])
let fuzzTarget: Target = {
    let ns = [Namespace(nsid: 1, nguid: Array(0..<16), uuid: Array(16..<32), readOnly: false, backend: FuzzBackend(), label: "a"),
              Namespace(nsid: 3, nguid: Array(32..<48), uuid: Array(48..<64), readOnly: true, backend: FuzzBackend(), label: "b")]
    return Target(settings: TargetSettings(), subsystems: [Subsystem(nqn: fuzzNQN, serial: "S", model: "M", allowAnyHost: true,
                                                                     allowedHosts: [], namespaces: ns)], ports: [fuzzPort])
}()

func connectData(_ subnqn: String, cntlid: UInt16) -> [UInt8] {
    var d = [UInt8](repeating: 0, count: 1024)
    d.withUnsafeMutableBytes {
        $0.baseAddress!.put16(cntlid, 16)
        $0.baseAddress!.putASCII(subnqn, 256, width: 256, pad: 0)
        $0.baseAddress!.putASCII(fuzzHost, 512, width: 256, pad: 0)
    }
    return d
}

/// A connected, enabled I/O controller (fresh for each input, so state cannot pile up).
func enabledController(discovery: Bool) -> Controller? {
    let sqe = SubmissionQueueEntry(opcode: 0x7F, commandID: 1, nsid: 1, cdw11: 31)
    let data = connectData(discovery ? NQN.discovery : fuzzNQN, cntlid: 0xFFFF)
    guard case let .admin(c, _) = data.withUnsafeBytes({ fuzzTarget.connect(sqe, data: $0, port: fuzzPort, peer: "fuzz") }) else { return nil }
    var none = [UInt8]()
    _ = none.withUnsafeMutableBytes {
        c.executeAdmin(SubmissionQueueEntry(opcode: 0x7F, commandID: 2, nsid: 0, cdw11: 0x14, cdw12: 1 | 6 << 16 | 4 << 20), data: $0,
                       context: QueueContext(queueID: 0, localAddress: "192.0.2.1"), target: fuzzTarget)
    }
    return c
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ bytes: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size >= 1 else { return 0 }
    let selector = bytes[0]
    let input = UnsafeRawBufferPointer(start: bytes + 1, count: size - 1)
    // Decoders read fixed-size structures: give them a zero-padded copy of at least that size.
    var padded = [UInt8](input) + [UInt8](repeating: 0, count: 1200)
    switch selector % 6 {
    case 0:  // PDU headers
        padded.withUnsafeBytes { b in
            let p = b.baseAddress!
            _ = PDUHeader(decoding: p).type
            _ = try? ICRequest.decode(p)
            _ = try? ICResponse.decode(p)
            _ = TerminationRequest.decode(p)
            _ = DataTransferHeader(decoding: p)
            _ = SubmissionQueueEntry(decoding: p + 8)
            _ = CompletionQueueEntry(decoding: p + 8)
        }
    case 1:  // I/O command validation, and range lists read from command data
        let sqe = padded.withUnsafeBytes { SubmissionQueueEntry(decoding: $0.baseAddress!) }
        let subsystem = fuzzTarget.subsystems[fuzzNQN]!
        if case let .ok(ns, request) = IODecode(sqe, subsystem: subsystem, maxTransfer: 512 * 1024), request.rangeCount > 0 {
            padded.withUnsafeBytes { b in
                let available = (b.count - 64) / (request.operation == .copy ? 32 : 16)
                let ranges = LBARanges(data: b.baseAddress! + 64, count: min(request.rangeCount, available),
                                       copy: request.operation == .copy, namespace: ns)
                _ = ranges.validate(namespace: ns, copyDestinationLBA: request.startingLBA)
            }
        }
    case 2, 3:  // admin and fabrics commands on an enabled I/O or discovery controller
        guard let c = enabledController(discovery: selector % 6 == 3) else { return 0 }
        let sqe = padded.withUnsafeBytes { SubmissionQueueEntry(decoding: $0.baseAddress!) }
        var data = Array(padded[64..<(64 + min(Int(sqe.sgl.length), 1024))])
        _ = data.withUnsafeMutableBytes {
            c.executeAdmin(sqe, data: $0, context: QueueContext(queueID: 0, localAddress: "192.0.2.1"), target: fuzzTarget)
        }
        // Reservation commands on a namespace with the rest of the input as data.
        if let ns = c.subsystem.namespace(1) {
            _ = data.withUnsafeMutableBytes { c.executeReservation(sqe, namespace: ns, data: $0, target: fuzzTarget) }
        }
        fuzzTarget.remove(c)
    case 4:  // Connect with arbitrary SQE fields and data
        let sqe = padded.withUnsafeBytes { SubmissionQueueEntry(decoding: $0.baseAddress!) }
        let outcome = padded.withUnsafeBytes { b in
            fuzzTarget.connect(sqe, data: UnsafeRawBufferPointer(rebasing: b[64..<(64 + 1024)]), port: fuzzPort, peer: "fuzz")
        }
        if case let .admin(c, _) = outcome { fuzzTarget.remove(c) }
    default:  // configuration files
        _ = try? TargetConfig.parse(json: [UInt8](input))
        _ = DiscoveryLog.decode([UInt8](input))
    }
    return 0
}
