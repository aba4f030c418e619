import FathomStorage
import FathomTarget

/// Binds a storage backend to the subsystem model. FathomTarget sees only geometry; the
/// engine reaches the backend through this (a final class, so the I/O path downcasts it
/// without a dynamic cast).
final class StorageNamespace: NamespaceBackend {
    let store: BlockBackend
    /// A clone namespace's per-host backends (`store` is then only its geometry).
    let clones: CloneSet?
    init(_ store: BlockBackend) {
        self.store = store
        clones = nil
    }
    init(clones: CloneSet) {
        self.store = clones.template
        self.clones = clones
    }
    var blockCount: UInt64 { store.blockCount }
    var blockSizeShift: UInt8 { store.blockSizeShift }
    func allocatedBlocks() -> UInt64 { store.allocatedBlocks() }
    /// A clone namespace's NUSE is what the asking host wrote (`nvme list` shows it as usage).
    func allocatedBlocks(host: String) -> UInt64 { clones?.writtenBlocks(host: host) ?? store.allocatedBlocks() }
    var deallocatedReadsZero: Bool { store.deallocatedReadsZero }
    var preferredWriteBlocks: UInt16 { store.preferredWriteBlocks }
}
