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
/// then the bitmap, bit i of byte i/8 for chunk i. The header of a new map reaches the disk
/// with its first bits (see `open`).
///
/// Bits are atomic words: reactors read them without a lock to route a Read (or a Write to
/// chunks already copied) straight to the ring, while the clone's writer (a storage worker,
/// holding the clone's lock) sets and clears them. Everything else here — the dirty page set,
/// `persist`, `clearAll` — belongs to the writer and is called with that lock held.
final class CloneMap {
    static let headerSize = 4096
    static let magic = "fathom-clone-map 1"
    let chunkShift: Int
    let chunkCount: Int
    /// Bit `c % 64` of word `c / 64` for chunk `c`; on a little-endian machine the words'
    /// bytes are the file's bitmap bytes, in order.
    private let words: UnsafeMutablePointer<Atomic<UInt64>>
    private let wordCount: Int
    /// Bytes of bitmap in the file.
    private let mapBytes: Int
    /// Map file pages (4096 bytes of bitmap each) changed since the last persist.
    private var dirtyPages = Set<Int>()
    private let fd: Int32
    let path: String

    var chunkSize: Int { 1 << chunkShift }

    /// Opens the map at `path`, creating it for a new clone. An existing map must describe
    /// the same base (identity and capacity) and chunk size.
    init(path: String, capacity: UInt64, chunkShift: Int, baseIdentity: String, host: String) throws {
        let chunkCount = Int((capacity + UInt64(1 << chunkShift) - 1) >> UInt64(chunkShift))
        let header = "\(Self.magic)\nchunk \(1 << chunkShift)\ncapacity \(capacity)\nbase \(baseIdentity)\nhost \(host)\n"
        let mapBytes = (chunkCount + 7) / 8
        let wordCount = (mapBytes + 7) / 8
        // Every step that can fail runs before a stored property is set: an initializer that
        // throws once the object is whole runs `deinit`, which would close `fd` a second time.
        let (fd, isNew) = try Self.open(path: path, header: header, mapBytes: mapBytes)
        guard let memory = mmap(nil, wordCount * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
              memory != MAP_FAILED else {
            let e = errno
            Glibc.close(fd)
            throw StorageError(path: path, errno: e, action: "no memory for the clone map of")
        }
        self.path = path
        self.chunkShift = chunkShift
        self.chunkCount = chunkCount
        self.mapBytes = mapBytes
        self.wordCount = wordCount
        self.fd = fd
        // Anonymous memory reads as zeros (a clear bit) without being allocated: only pages
        // holding a set bit become resident, so a host that wrote little of a large base costs
        // little (a full bitmap is 2 MiB per TiB of base, per host).
        words = memory.bindMemory(to: Atomic<UInt64>.self, capacity: wordCount)
        if !isNew { try loadBits() }  // a throw from here on runs `deinit`, which cleans up
    }

    /// Reads the bitmap from the file a block at a time and stores its non-zero words.
    private func loadBits() throws {
        let block = 64 * 1024
        var buffer = [UInt8](repeating: 0, count: block)
        var at = 0
        while at < mapBytes {
            let n = min(block, mapBytes - at)
            let got = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, n, off_t(Self.headerSize + at)) }
            // The size was checked at open: a short read is an I/O error, and a bit read as clear
            // would show the base where the host's flushed data is.
            guard got == n else { throw StorageError(path: path, errno: got < 0 ? errno : EIO, action: "cannot read the clone map") }
            buffer.withUnsafeBytes { raw in
                for w in 0..<((n + 7) / 8) {
                    var word: UInt64 = 0
                    for b in 0..<min(8, n - w * 8) { word |= UInt64(raw[w * 8 + b]) << (8 * UInt64(b)) }
                    if word != 0 {
                        words[at / 8 + w].store(word, ordering: .relaxed)
                        setBits.add(word.nonzeroBitCount, ordering: .relaxed)
                    }
                }
            }
            at += n
        }
    }

    /// Opens the map file, creating it with `header` and an empty bitmap if there is none (or a
    /// crash left it empty); true when its bitmap is new, all clear.
    private static func open(path: String, header: String, mapBytes: Int) throws -> (Int32, Bool) {
        var created = false
        var fd = Glibc.open(path, O_RDWR | O_CLOEXEC)
        if fd < 0 && errno == ENOENT {
            fd = Glibc.open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            created = true
        }
        guard fd >= 0 else { throw StorageError(path: path, errno: errno, action: "cannot open the clone map") }
        var page = [UInt8](repeating: 0, count: headerSize)
        let n = created ? 0 : pread(fd, &page, page.count, 0)
        if n <= 0 || page[0] == 0 {
            // A new map, or one created before a crash that kept none of it: its header is not
            // synced here (it reaches the disk with the first `persist`, in the same
            // `fdatasync` as the first bits), so an empty header means no bit was ever durable.
            // That keeps a journal commit off the reactor, where a host's Connect creates it.
            var first = [UInt8](header.utf8)
            first += [UInt8](repeating: 0, count: headerSize - first.count)
            guard ftruncate(fd, 0) == 0, pwrite(fd, first, first.count, 0) == first.count,
                  ftruncate(fd, off_t(headerSize + mapBytes)) == 0 else {
                let e = errno
                Glibc.close(fd)
                if created { unlink(path) }
                throw StorageError(path: path, errno: e, action: "cannot create the clone map")
            }
            return (fd, true)
        }
        let existing = String(decoding: page.prefix(max(0, n)).prefix { $0 != 0 }, as: UTF8.self)
        guard existing == header else {
            Glibc.close(fd)
            throw StorageError(path: path, errno: EINVAL,
                               action: "the clone map does not match its base (the base image, its size or the host changed; reset the clone):")
        }
        var st = stat()
        guard fstat(fd, &st) == 0, Int(st.st_size) >= headerSize + mapBytes else {
            Glibc.close(fd)
            throw StorageError(path: path, errno: EIO, action: "the clone map is truncated:")
        }
        return (fd, false)
    }

    deinit {
        Glibc.close(fd)
        munmap(UnsafeMutableRawPointer(words), wordCount * 8)
    }

    /// The chunk holds the host's data. Acquiring: a reader that sees the bit also sees the
    /// overlay write that preceded it.
    @inline(__always)
    func isSet(_ chunk: Int) -> Bool { words[chunk >> 6].load(ordering: .acquiring) & (1 << UInt64(chunk & 63)) != 0 }

    /// Sets or clears a chunk's bit (the writer only, after the chunk's data is in the overlay).
    func set(_ chunk: Int, _ on: Bool) {
        let mask = UInt64(1) << UInt64(chunk & 63)
        let old = on ? words[chunk >> 6].bitwiseOr(mask, ordering: .releasing).oldValue
                     : words[chunk >> 6].bitwiseAnd(~mask, ordering: .releasing).oldValue
        guard (old & mask != 0) != on else { return }
        setBits.add(on ? 1 : -1, ordering: .relaxed)
        dirtyPages.insert((chunk >> 3) / 4096)
    }

    /// Chunks holding host data (kept as bits change: Identify reads it per command).
    var allocatedChunks: Int { setBits.load(ordering: .relaxed) }
    private let setBits = Atomic<Int>(0)

    var isDirty: Bool { !dirtyPages.isEmpty }

    /// Writes the changed pages and syncs the map (the overlay must be synced first).
    func persist() -> Int32 {
        var page = [UInt8](repeating: 0, count: 4096)
        for p in dirtyPages.sorted() {
            let start = p * 4096
            let count = min(4096, mapBytes - start)
            page.withUnsafeMutableBytes { raw in
                for w in 0..<((count + 7) / 8) {
                    raw.storeBytes(of: words[start / 8 + w].load(ordering: .relaxed).littleEndian, toByteOffset: w * 8, as: UInt64.self)
                }
            }
            let n = pwrite(fd, page, count, off_t(Self.headerSize + start))
            guard n == count else { return n < 0 ? -errno : -EIO }
        }
        guard fdatasync(fd) == 0 else { return -errno }
        dirtyPages.removeAll()
        return 0
    }

    /// Clears every bit and persists (a reset clone reads as its base again).
    func clearAll() -> Int32 {
        // Words already clear are only read: writing them would allocate their pages.
        setBits.store(0, ordering: .relaxed)
        for i in 0..<wordCount where words[i].load(ordering: .relaxed) != 0 && words[i].exchange(0, ordering: .releasing) != 0 {
            dirtyPages.insert(i * 8 / 4096)
        }
        return persist()
    }
}
