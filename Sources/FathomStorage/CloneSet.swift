import CLiburing
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The per-host clones of one clone namespace: a shared base and, in `directory`, one
/// overlay + map per host that ever connected (`<host hash>-ns<nsid>.overlay`). A host's
/// clone is created on its first connect and reopened after a restart from its files.
public final class CloneSet {
    public let base: CloneBase
    public let directory: String
    public let nsid: UInt32
    /// One entry per host, inserted under this lock; the clone itself is opened under the
    /// entry's own lock. Opening one (files created, a large map read back) can take a while
    /// on a slow disk, and must not hold up the other hosts' lookups meanwhile.
    private let clones = Mutex<[String: HostClone]>([:])

    private final class HostClone: Sendable {
        /// The open clone; its lock is only held to read or set it.
        let backend = Mutex<BlockBackend?>(nil)
        /// Held while the clone is opened, so it is opened once.
        let opening = Mutex<Void>(())
    }

    /// Called on the opening thread just before a host's clone is opened: tests hold an
    /// opening here to stand for a slow disk.
    let willOpen = Mutex<(@Sendable (String) -> Void)?>(nil)
    /// Geometry for the subsystem model; never used for I/O (each host has its own backend).
    public let template: BlockBackend

    public init(base: CloneBase, directory: String, nsid: UInt32) throws {
        self.base = base
        self.directory = directory
        self.nsid = nsid
        template = FailingBackend(blockCount: base.capacity >> UInt64(base.blockSizeShift), blockSizeShift: base.blockSizeShift, error: EIO)
        var path = ""
        for part in directory.split(separator: "/") {
            path += "/" + part
            mkdir(path, 0o700)
        }
        guard access(directory, W_OK) == 0 else {
            throw StorageError(path: directory, errno: errno, action: "cannot write clone overlays in")
        }
    }

    /// The overlay file of `host` (its map is the same path + ".map").
    public func overlayPath(for host: String) -> String {
        // FNV-1a: a short, stable file name for any host NQN (the NQN itself is in the map).
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in host.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        let hex = String(h, radix: 16)
        return "\(directory)/\(String(repeating: "0", count: 16 - hex.count))\(hex)-ns\(nsid).overlay"
    }

    /// The host's clone, created on first use. A clone that cannot be opened or created
    /// (disk full, a map of another base) is a backend that fails every command with EIO
    /// (the host sees errors in its log, other hosts carry on); `lastError` tells why.
    public func backend(for host: String) -> BlockBackend {
        // A clone belongs to a host NQN; anonymous hosts (empty HOSTNQN, as spdk_nvme_perf
        // sends) would all share one writable clone, so they get none.
        if host.isEmpty {
            return FailingBackend(blockCount: template.blockCount, blockSizeShift: template.blockSizeShift, error: EIO,
                                  reason: "the host connected without a host NQN; clones are kept per host NQN")
        }
        let entry = clones.withLock { map in
            if let e = map[host] { return e }
            let e = HostClone()
            map[host] = e
            return e
        }
        if let b = entry.backend.withLock({ $0 }) { return b }
        return entry.opening.withLock { _ in
            if let b = entry.backend.withLock({ $0 }) { return b }
            willOpen.withLock { $0 }?(host)
            let opened: BlockBackend
            do {
                opened = try CloneBackend(base: base, host: host, overlayPath: overlayPath(for: host))
            } catch {
                opened = FailingBackend(blockCount: template.blockCount, blockSizeShift: template.blockSizeShift, error: EIO,
                                        reason: "\(error)")
            }
            entry.backend.withLock { $0 = opened }
            return opened
        }
    }

    /// The host's clone if it is open (nil while another thread is still opening it).
    private func openClone(_ host: String) -> BlockBackend? {
        clones.withLock { $0[host] }?.backend.withLock { $0 }
    }

    /// Blocks `host`'s clone holds (0 for a host with no open clone).
    public func writtenBlocks(host: String) -> UInt64 {
        openClone(host)?.allocatedBlocks() ?? 0
    }

    public struct CloneInfo: Sendable {
        public var host: String
        public var overlay: String
        public var writtenBytes: UInt64
        public var open: Bool
        public var error: String?
    }

    /// Every clone on disk or open: host, overlay, bytes written.
    public func list() -> [CloneInfo] {
        var out: [String: CloneInfo] = [:]
        for host in clones.withLock({ Array($0.keys) }) {
            guard let b = openClone(host) else { continue }
            if let c = b as? CloneBackend {
                out[host] = CloneInfo(host: host, overlay: c.overlayPath, writtenBytes: c.writtenBytes, open: true)
            } else if let f = b as? FailingBackend {
                out[host] = CloneInfo(host: host, overlay: overlayPath(for: host), writtenBytes: 0, open: false, error: f.reason)
            }
        }
        // Clones of hosts not connected since the start: read the host from the map header.
        if let dir = opendir(directory) {
            while let e = readdir(dir) {
                let name = withUnsafeBytes(of: e.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                guard name.hasSuffix("-ns\(nsid).overlay.map") else { continue }
                let mapPath = directory + "/" + name
                guard let host = Self.hostInMap(mapPath), out[host] == nil else { continue }
                var st = stat()
                let overlay = String(mapPath.dropLast(4))
                _ = stat(overlay, &st)
                out[host] = CloneInfo(host: host, overlay: overlay, writtenBytes: UInt64(st.st_blocks) * 512, open: false)
            }
            closedir(dir)
        }
        return out.values.sorted { $0.host < $1.host }
    }

    /// Forgets the host's writes (`delete`: also removes its files; it gets a fresh clone
    /// on its next connect either way). The caller makes sure the host is not connected.
    public func reset(host: String, delete: Bool) throws {
        let path = overlayPath(for: host)
        let open = clones.withLock { $0.removeValue(forKey: host) }.flatMap { e in e.opening.withLock { _ in e.backend.withLock { $0 } } }
        guard open != nil || access(path + ".map", F_OK) == 0 else {
            throw StorageError(path: path, errno: ENOENT, action: "no clone of \(host) at")
        }
        if delete {
            unlink(path + ".map")  // the map first: an overlay without a map is never read
            unlink(path)
            return
        }
        let clone: CloneBackend
        if let c = open as? CloneBackend { clone = c } else { clone = try CloneBackend(base: base, host: host, overlayPath: path) }
        let r = clone.reset()
        guard r == 0 else { throw StorageError(path: path, errno: -r, action: "cannot reset the clone") }
    }

    static func hostInMap(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var page = [UInt8](repeating: 0, count: 4096)
        let n = pread(fd, &page, page.count, 0)
        guard n > 0 else { return nil }
        let text = String(decoding: page.prefix(n).prefix { $0 != 0 }, as: UTF8.self)
        return text.split(separator: "\n").first { $0.hasPrefix("host ") }.map { String($0.dropFirst(5)) }
    }
}

/// A backend that fails every operation (a clone that could not be opened): the host gets
/// errors, nothing else is affected.
public final class FailingBackend: BlockBackend {
    public let blockCount: UInt64
    public let blockSizeShift: UInt8
    public var isReadOnly: Bool { false }
    let error: Int32
    public let reason: String?

    public init(blockCount: UInt64, blockSizeShift: UInt8, error: Int32, reason: String? = nil) {
        self.blockCount = blockCount
        self.blockSizeShift = blockSizeShift
        self.error = error
        self.reason = reason
    }

    public func allocatedBlocks() -> UInt64 { 0 }
    public var deallocatedReadsZero: Bool { false }
    public var preferredWriteBlocks: UInt16 { 0 }
    public func prepare(_ operation: StorageOperation, sqe: () -> UnsafeMutablePointer<io_uring_sqe>) -> Int32? { -error }
    public func close() {}
}
