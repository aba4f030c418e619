import NVMeInitiator
import NVMeWire
import XCTest

/// What the Swift host puts on the wire, checked without a target.
final class HostEncodingTests: XCTestCase {
    func testReadWriteCommandFields() {
        let w = HostController.writeCommand(nsid: 3, lba: 0x1_0000_0002, blocks: 8, fua: true)
        XCTAssertEqual(w.opcode, 1)
        XCTAssertEqual(w.nsid, 3)
        XCTAssertEqual(w.startingLBA, 0x1_0000_0002)
        XCTAssertEqual(w.blockCountMinusOne, 7)
        XCTAssertTrue(w.forceUnitAccess)
        let r = HostController.readCommand(nsid: 1, lba: 5, blocks: 1)
        XCTAssertEqual(r.opcode, 2)
        XCTAssertEqual(r.blockCountMinusOne, 0)
        XCTAssertFalse(r.forceUnitAccess)
        XCTAssertEqual(r.psdt, 1, "SGL, as fabrics require")
    }

    func testConnectionRefusedIsReported() {
        // Port 1 on loopback: nothing listens there.
        XCTAssertThrowsError(try QueuePair(host: "127.0.0.1", port: 1, queueID: 0)) { error in
            guard case InitiatorError.system(let what, _) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(what.contains("127.0.0.1:1"))
        }
    }
}
