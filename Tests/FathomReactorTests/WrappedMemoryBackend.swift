import CLiburing
import FathomConfig
import FathomReactor
import FathomStorage
import Logging

/// A memory namespace that test backends wrap to change some operations (fail them, make them
/// wait): geometry and every operation not overridden are the memory backend's.
class WrappedMemoryBackend: BlockBackend {
    let inner: MemoryBackend
    init(bytes: UInt64) throws { inner = try MemoryBackend(bytes: bytes) }
    var blockCount: UInt64 { inner.blockCount }
    var blockSizeShift: UInt8 { inner.blockSizeShift }
    var isReadOnly: Bool { false }
    var deallocatedReadsZero: Bool { true }
    var preferredWriteBlocks: UInt16 { 0 }
    func allocatedBlocks() -> UInt64 { inner.allocatedBlocks() }
    func close() {}
    func prepare(_ operation: StorageOperation, sqe: () -> UnsafeMutablePointer<io_uring_sqe>) -> Int32? {
        inner.prepare(operation, sqe: sqe)
    }
    func perform(_ operation: StorageOperation) -> Int32 { inner.perform(operation) }
}

/// A started one-reactor target whose subsystem `nqn` (open to any host) has two 8 MiB
/// namespaces: nsid 1 is `nsid1`, nsid 2 `nsid2` or a plain memory namespace (the bystander).
func startServer(nqn: String, nsid1: BlockBackend, nsid2: BlockBackend? = nil) throws -> FathomServer {
    let config = try TargetConfig.parse(json: Array("""
    {"ports": [{"addr": {"traddr": "127.0.0.1", "trsvcid": "0", "trtype": "tcp"}, "portid": 1, "subsystems": ["\(nqn)"]}],
     "subsystems": [{"nqn": "\(nqn)", "attr": {"allow_any_host": "1"}, "namespaces": [
        {"nsid": 1, "device": {"backend": "memory", "size": "8M"}}, {"nsid": 2, "device": {"backend": "memory", "size": "8M"}}]}]}
    """.utf8))
    var logger = Logger(label: "wrapped-backend-test") { StreamLogHandler.standardError(label: $0) }
    logger.logLevel = .critical
    let server = try FathomServer(config: config, reactorCount: 1, logger: logger) { spec in spec.nsid == 1 ? nsid1 : nsid2 }
    try server.start()
    return server
}
