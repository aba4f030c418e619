import NVMeWire
import XCTest

final class WireCodecTests: XCTestCase {
    func testCRC32CKnownVectors() {
        // RFC 3720 appendix B.4 and the classic check value.
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
        XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
        XCTAssertEqual(CRC32C.checksum(Array(0..<32)), 0x46DD_794E)
        // Accumulating over pieces gives the same digest.
        let bytes = Array("hello, nvme over tcp".utf8)
        let whole = CRC32C.checksum(bytes)
        let split = bytes.withUnsafeBytes { b in
            CRC32C.finish(CRC32C.update(CRC32C.update(CRC32C.seed, b.baseAddress!, 5), b.baseAddress! + 5, b.count - 5))
        }
        XCTAssertEqual(whole, split)
    }

    func testICRespGoldenBytes() {
        var b = [UInt8](repeating: 0xAA, count: 128)
        b.withUnsafeMutableBytes { ICResponse(headerDigest: true, dataDigest: false, maxH2CData: 131072).encode(into: $0.baseAddress!) }
        XCTAssertEqual(Array(b[0..<16]), [0x01, 0x00, 0x80, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x02, 0x00])
        XCTAssertTrue(b[16...].allSatisfy { $0 == 0 })
    }

    func testICReqValidation() throws {
        var b = [UInt8](repeating: 0, count: 128)
        b.withUnsafeMutableBytes { ICRequest(headerDigest: true, dataDigest: true, maxR2T: 3).encode(into: $0.baseAddress!) }
        let r = try b.withUnsafeBytes { try ICRequest.decode($0.baseAddress!) }
        XCTAssertEqual(r, ICRequest(headerDigest: true, dataDigest: true, maxR2T: 3))
        var bad = b
        bad[8] = 1
        XCTAssertThrowsError(try bad.withUnsafeBytes { try ICRequest.decode($0.baseAddress!) }) {
            XCTAssertEqual(($0 as? TransportFault)?.fieldOffset, 8)
        }
        bad = b
        bad[10] = 32
        XCTAssertThrowsError(try bad.withUnsafeBytes { try ICRequest.decode($0.baseAddress!) })
        bad = b
        bad[4] = 127
        XCTAssertThrowsError(try bad.withUnsafeBytes { try ICRequest.decode($0.baseAddress!) })
    }

    func testSQERoundTripAndFabricsFields() {
        let sqe = SubmissionQueueEntry(opcode: 0x7F, commandID: 0x1234, nsid: 0x01, sgl: .inCapsule(length: 1024),
                                       cdw10: 3 << 16, cdw11: 127 | 0x4 << 16, cdw12: 5000)
        var b = [UInt8](repeating: 0, count: 64)
        b.withUnsafeMutableBytes { sqe.encode(into: $0.baseAddress!) }
        XCTAssertEqual(b[0], 0x7F)
        XCTAssertEqual(b[1], 0x40, "PSDT 01b: SGL")
        XCTAssertEqual(Array(b[2..<4]), [0x34, 0x12])
        XCTAssertEqual(b[39], 0x01, "SGL identifier: data block, offset subtype")
        let back = b.withUnsafeBytes { SubmissionQueueEntry(decoding: $0.baseAddress!) }
        XCTAssertEqual(back, sqe)
        XCTAssertEqual(back.fabricsCommandType, 1)
        XCTAssertEqual(back.connectQueueID, 3)
        XCTAssertEqual(back.connectSQSize, 127)
        XCTAssertEqual(back.connectAttributes, 4)
        XCTAssertEqual(back.connectKeepAliveTimeout, 5000)
        XCTAssertEqual(back.sgl.length, 1024)
        XCTAssertTrue(back.sgl.isInCapsule)
    }

    func testCQEStatusLayout() {
        var b = [UInt8](repeating: 0, count: 16)
        let cqe = CompletionQueueEntry(commandID: 7, status: .lbaOutOfRange, dw0: 0xAABBCCDD, sqHead: 5, sqID: 2)
        b.withUnsafeMutableBytes { cqe.encode(into: $0.baseAddress!) }
        // Status 0x80 generic with DNR: (0x4000 | 0x80) << 1 = 0x8100.
        XCTAssertEqual(Array(b[14..<16]), [0x00, 0x81])
        XCTAssertEqual(Array(b[0..<4]), [0xDD, 0xCC, 0xBB, 0xAA])
        XCTAssertEqual(b.withUnsafeBytes { CompletionQueueEntry(decoding: $0.baseAddress!) }, cqe)
        XCTAssertEqual(NVMeStatus.connectInvalidHost.codeType, 1)
        XCTAssertEqual(NVMeStatus.connectInvalidHost.code, 0x84)
    }

    func testDataTransferHeaderAndDigestArithmetic() {
        let d = DigestConfig(header: true, data: true)
        XCTAssertEqual(d.pduLength(headerLength: 24, dataLength: 4096), 24 + 4 + 4096 + 4)
        XCTAssertEqual(d.pduLength(headerLength: 24, dataLength: 0), 28)
        XCTAssertEqual(d.dataOffset(headerLength: 24), 28)
        var b = [UInt8](repeating: 0, count: 24)
        b.withUnsafeMutableBytes {
            DataTransferHeader(commandID: 9, transferTag: 3, offset: 8192, length: 4096)
                .encode(type: .r2t, flags: d.flags, dataOffset: 0, pduLength: 28, into: $0.baseAddress!)
        }
        XCTAssertEqual(Array(b[0..<8]), [0x09, 0x03, 0x18, 0x00, 0x1C, 0x00, 0x00, 0x00])
        let h = b.withUnsafeBytes { DataTransferHeader(decoding: $0.baseAddress!) }
        XCTAssertEqual(h, DataTransferHeader(commandID: 9, transferTag: 3, offset: 8192, length: 4096))
    }

    func testNQNRules() {
        XCTAssertTrue(NQN.isValid("nqn.2014-08.org.nvmexpress:uuid:6d2e1c70-3f4b-4e25-9a3d-0d1c2b3a4f50"))
        XCTAssertTrue(NQN.isValid("nqn.2026-11.io.fathom:dataset-imagenet"))
        XCTAssertTrue(NQN.isValid(NQN.discovery))
        XCTAssertNotNil(NQN.problem("iqn.2026-11.io.fathom:x"))
        XCTAssertNotNil(NQN.problem("nqn.2026-13.io.fathom:x"))
        XCTAssertNotNil(NQN.problem("nqn.26-11.io.fathom"))
        XCTAssertNotNil(NQN.problem("nqn.2014-08.org.nvmexpress:uuid:not-a-uuid"))
        XCTAssertNotNil(NQN.problem("nqn.2026-11." + String(repeating: "a", count: 220)))
        XCTAssertEqual(UUIDText.format(UUIDText.parse("6F1D1B2A-93C4-4B1E-8A55-0C3F6A1E2D44")!), "6f1d1b2a-93c4-4b1e-8a55-0c3f6a1e2d44")
    }

    func testIdentifyAndDiscoveryLayouts() {
        let id = ControllerIdentity(kind: .io, controllerID: 5, serial: "SN1", model: "M", firmware: "1.0", version: 0x10300,
                                    subsystemNQN: "nqn.2026-11.io.fathom:a", maxDataTransferExponent: 7, namespaceCount: 1024,
                                    maxCommands: 128, inCapsuleDataSize: 16384, keepAliveSupport: 10, volatileWriteCache: true,
                                    multiController: true, asyncEventLimit: 3, optionalNVMCommands: 0).encode()
        XCTAssertEqual(id.count, 4096)
        XCTAssertEqual(Array(id[4..<8]), Array("SN1 ".utf8), "space padded")
        XCTAssertEqual(id[76], 2, "CMIC multi-controller")
        XCTAssertEqual(id[77], 7)
        XCTAssertEqual(Array(id[78..<80]), [5, 0])
        XCTAssertEqual(id[512], 0x66)
        XCTAssertEqual(id[513], 0x44)
        XCTAssertEqual(Array(id[768..<791]), Array("nqn.2026-11.io.fathom:a".utf8))
        let ns = NamespaceIdentity(blockCount: 100, blocksInUse: 10, blockSizeShift: 12, nguid: Array(0..<16), uuid: Array(16..<32),
                                   writeProtected: true, shared: true).encode()
        XCTAssertEqual(ns.count, 4096)
        XCTAssertEqual(ns[24] & 1, 1, "thin provisioned")
        XCTAssertEqual(ns[30], 1, "NMIC shared")
        XCTAssertEqual(ns[99], 1, "NSATTR write protected")
        XCTAssertEqual(ns[130], 12)
        let log = DiscoveryLog.encode(generation: 3, entries: [
            DiscoveryLogEntry(subsystemType: .nvm, portID: 2, isIPv6: false, address: "192.0.2.1", serviceID: "4420", subsystemNQN: "nqn.2026-11.io.fathom:a")])
        XCTAssertEqual(log.count, 2048)
        XCTAssertEqual(log[1024], 3, "TCP")
        XCTAssertEqual(log[1026], 2, "NVM subsystem")
        XCTAssertEqual(Array(log[1030..<1034]), [0xFF, 0xFF, 32, 0], "CNTLID FFFFh, ASQSZ 32")
        let decoded = DiscoveryLog.decode(log)!
        XCTAssertEqual(decoded.generation, 3)
        XCTAssertEqual(decoded.entries.first?.address, "192.0.2.1")
        XCTAssertEqual(decoded.entries.first?.serviceID, "4420")
    }
}
