import CLiburing
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Which chunks of a clone's overlay hold the host's data (bit set) and which still read
/// from the base (bit clear), kept in memory and persisted in a map file beside the overlay.
///
/// Crash safety rests on one order: a bit reaches the map file only after the chunk's data
/// reached the overlay (`fdatasync` of the overlay, then the map pages, then `fdatasync` of
/// the map). Persisting happens when the host flushes (or writes with FUA, or turns the
/// write cache off): writes the host never flushed may be lost by a crash, as on any disk
/// with a volatile write cache, but a flushed write never reads back as base data and a
/// chunk the map claims is never half copied. Bits clear (deallocate) are persisted before
/// the overlay's blocks are freed, so a crash never shows a freed hole as the host's data.
///
/// File layout: a 4096-byte text header (magic, chunk size, capacity, base identity, host),
/// then the bitmap, bit i of byte i/8 for chunk i.
final class CloneMap {
    static let headerSize = 4096
    static let magic = "fathom-clone-map 1"
    let chunkShift: Int
    let chunkCount: Int
    private var bits: [UInt8]
    /// Map file pages (4096 bytes of bitmap each) changed since the last persist.
    private var dirtyPages = Set<Int>()
    private let fd: Int32
    let path: String

    var chunkSize: Int { 1 << chunkShift }

    /// Opens the map at `path`, creating it for a new clone. An existing map must describe
    /// the same base (identity and capacity) and chunk size.
    init(path: String, capacity: UInt64, chunkShift: Int, baseIdentity: String, host: String) throws {
        self.path = path
        self.chunkShift = chunkShift
        chunkCount = Int((capacity + UInt64(1 << chunkShift) - 1) >> UInt64(chunkShift))
        let header = "\(Self.magic)\nchunk \(1 << chunkShift)\ncapacity \(capacity)\nbase \(baseIdentity)\nhost \(host)\n"
        let mapBytes = (chunkCount + 7) / 8
        var created = false
        var fd = open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 && errno == ENOENT {
            fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            created = true
        }
        guard fd >= 0 else { throw StorageError(path: path, errno: errno, action: "cannot open the clone map") }
        self.fd = fd
        bits = [UInt8](repeating: 0, count: mapBytes)
        if created {
            var page = [UInt8](header.utf8)
            page += [UInt8](repeating: 0, count: Self.headerSize - page.count)
            guard pwrite(fd, page, page.count, 0) == page.count, ftruncate(fd, off_t(Self.headerSize + mapBytes)) == 0,
                  fsync(fd) == 0 else {
                let e = errno
                Glibc.close(fd)
                unlink(path)
                throw StorageError(path: path, errno: e, action: "cannot create the clone map")
            }
        } else {
            var page = [UInt8](repeating: 0, count: Self.headerSize)
            let n = pread(fd, &page, page.count, 0)
            let existing = String(decoding: page.prefix(max(0, n)).prefix { $0 != 0 }, as: UTF8.self)
            guard existing == header else {
                Glibc.close(fd)
                throw StorageError(path: path, errno: EINVAL,
                                   action: "the clone map does not match its base (the base image, its size or the host changed; reset the clone):")
            }
            let got = bits.withUnsafeMutableBytes { pread(fd, $0.baseAddress, mapBytes, off_t(Self.headerSize)) }
            guard got == mapBytes else {
                Glibc.close(fd)
                throw StorageError(path: path, errno: EIO, action: "the clone map is truncated:")
            }
        }
    }

    deinit { Glibc.close(fd) }

    @inline(__always)
    func isSet(_ chunk: Int) -> Bool { bits[chunk >> 3] & (1 << UInt8(chunk & 7)) != 0 }

    func set(_ chunk: Int, _ on: Bool) {
        let mask = UInt8(1) << UInt8(chunk & 7)
        let old = bits[chunk >> 3]
        let new = on ? old | mask : old & ~mask
        guard new != old else { return }
        bits[chunk >> 3] = new
        dirtyPages.insert((chunk >> 3) / 4096)
    }

    /// Chunks holding host data.
    var allocatedChunks: Int { bits.reduce(0) { $0 + $1.nonzeroBitCount } }

    var isDirty: Bool { !dirtyPages.isEmpty }

    /// Writes the changed pages and syncs the map (the overlay must be synced first).
    func persist() -> Int32 {
        for page in dirtyPages.sorted() {
            let start = page * 4096
            let count = min(4096, bits.count - start)
            let n = bits.withUnsafeBytes { pwrite(fd, $0.baseAddress! + start, count, off_t(Self.headerSize + start)) }
            guard n == count else { return n < 0 ? -errno : -EIO }
        }
        guard fdatasync(fd) == 0 else { return -errno }
        dirtyPages.removeAll()
        return 0
    }

    /// Clears every bit and persists (a reset clone reads as its base again).
    func clearAll() -> Int32 {
        for i in bits.indices where bits[i] != 0 {
            bits[i] = 0
            dirtyPages.insert(i / 4096)
        }
        return persist()
    }
}
