import FathomTarget

/// Geometry-only backend: the subsystem model never touches data.
final class FakeBackend: NamespaceBackend {
    let blockCount: UInt64
    let blockSizeShift: UInt8
    init(blocks: UInt64, shift: UInt8 = 9) {
        blockCount = blocks
        blockSizeShift = shift
    }
    func allocatedBlocks() -> UInt64 { blockCount / 2 }
    var deallocatedReadsZero: Bool { true }
    var preferredWriteBlocks: UInt16 { 8 }
}
