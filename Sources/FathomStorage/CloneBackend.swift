import CLiburing
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The shared, read-only base of a clone namespace: opened once, read by every host's
/// clone (its pages stay in the page cache for all of them).
///
/// Opened as a read-only, buffered `FileBackend` (never O_DIRECT, even on a block device: the
/// shared page cache is the point), so its reads take the same paths as a file namespace's:
/// cached ranges of a file on a disk filesystem sent from its mapping, a file on tmpfs read
/// at once, everything else on the ring. The clone's geometry is the configured block size's,
/// not a block device's sector size.
public final class CloneBase {
    public let path: String
    /// The base as a read-only file namespace would open it (its data path, for operators).
    public let file: FileBackend
    var fd: Int32 { file.fd }
    public let capacity: UInt64
    public let blockSizeShift: UInt8
    /// Identifies the base's contents in overlay maps (the namespace NGUID, hex).
    public let identity: String

    /// `mapsTmpfsFiles` and `mapsPageCache` as for a file namespace (`--tmpfs-io`,
    /// `--page-cache-reads`).
    public init(path: String, blockSize: Int, identity: String, mapsTmpfsFiles: Bool = true, mapsPageCache: Bool = true) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { throw StorageError(path: path, errno: errno, action: "cannot open the clone base") }
        guard (st.st_mode & S_IFMT) == S_IFREG || (st.st_mode & S_IFMT) == S_IFBLK else {
            throw StorageError(path: path, errno: EINVAL, action: "the clone base is not a regular file or block device:")
        }
        let file: FileBackend
        do {
            file = try FileBackend(path: path, readOnly: true, directIO: false, blockSize: blockSize,
                                   mapsTmpfsFiles: mapsTmpfsFiles, mapsPageCache: mapsPageCache)
        } catch let e as StorageError {
            throw StorageError(path: path, errno: e.errno, action: "cannot open the clone base")
        }
        var bytes = UInt64(st.st_size)
        if (st.st_mode & S_IFMT) == S_IFBLK {
            var size: UInt64 = 0
            _ = ioctl(file.fd, fathom_BLKGETSIZE64, &size)
            bytes = size
        }
        blockSizeShift = UInt8(blockSize.trailingZeroBitCount)
        capacity = (bytes >> UInt64(blockSizeShift)) << UInt64(blockSizeShift)
        guard capacity > 0 else {
            file.close()
            throw StorageError(path: path, errno: EINVAL, action: "the clone base is smaller than one block:")
        }
        self.path = path
        self.file = file
        self.identity = identity
    }

    deinit { file.close() }
}

/// One host's writable view of a clone namespace: the shared base plus the host's own
/// copy-on-write overlay (a sparse file of the base's size) and its chunk map (see
/// `CloneMap` for the crash-safety order). Reads of chunks the host never wrote come from
/// the base; the first write to a chunk copies the rest of that chunk from the base (64 KiB
/// chunks, qcow2's default cluster size); deallocating whole chunks hands them back to the
/// base.
///
/// Nothing here blocks a reactor. A Read, and a Write to chunks already in the overlay, is
/// one operation on the ring, routed by the map's bits (atomic, read without a lock); a Read
/// spanning chunks of both sources is cut where the source changes and the engine issues the
/// rest as it does for any short transfer. Everything else — a first write to a chunk (a
/// read-modify-write of the base's chunk), Write Zeroes, Deallocate, Flush and FUA (the
/// overlay's `fdatasync`, then the map's) — `prepare` hands to a storage worker thread
/// (`perform`), one at a time per host under the clone's writer lock: a copy-up must not
/// interleave with another write to its chunk, and a host's queues may sit on several
/// reactors. Hosts never wait for each other, and a host's Flush never stalls a reactor.
public final class CloneBackend: BlockBackend {
    public let base: CloneBase
    public let host: String
    public let overlayPath: String
    public var blockCount: UInt64 { base.capacity >> UInt64(base.blockSizeShift) }
    public var blockSizeShift: UInt8 { base.blockSizeShift }
    public var isReadOnly: Bool { false }
    private let overlay: Int32
    private let map: CloneMap
    /// Held by the one storage worker changing this clone (see the type's notes).
    private let writer = Mutex<Void>(())
    public static let chunkShift = 16

    /// Opens (or creates, on the host's first connect) the overlay and map at
    /// `overlayPath` and `overlayPath + ".map"`.
    public init(base: CloneBase, host: String, overlayPath: String) throws {
        self.base = base
        self.host = host
        self.overlayPath = overlayPath
        let fd = open(overlayPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw StorageError(path: overlayPath, errno: errno, action: "cannot create the clone overlay") }
        var st = stat()
        fstat(fd, &st)
        if UInt64(st.st_size) < base.capacity { ftruncate(fd, off_t(base.capacity)) }
        do {
            map = try CloneMap(path: overlayPath + ".map", capacity: base.capacity, chunkShift: Self.chunkShift,
                               baseIdentity: base.identity, host: host)
        } catch {
            Glibc.close(fd)
            throw error
        }
        overlay = fd
    }

    deinit { Glibc.close(overlay) }

    /// Chunks the host has written, and their bytes.
    public var writtenBytes: UInt64 { UInt64(map.allocatedChunks) << UInt64(Self.chunkShift) }

    public func allocatedBlocks() -> UInt64 { writtenBytes >> UInt64(blockSizeShift) }
    /// Deallocated chunks read as the base again, not as zeros.
    public var deallocatedReadsZero: Bool { false }
    public var preferredWriteBlocks: UInt16 { UInt16(clamping: (1 << Self.chunkShift) >> Int(blockSizeShift)) }

    @inline(__always)
    public func prepare(_ operation: StorageOperation, sqe get: () -> UnsafeMutablePointer<io_uring_sqe>) -> Int32? {
        switch operation {
        case let .read(buffer, length, offset):
            let run = sourceRun(offset: offset, length: length)
            guard run.fromOverlay else { return base.file.prepare(.read(buffer: buffer, length: run.count, offset: offset), sqe: get) }
            io_uring_prep_read(get(), overlay, buffer, UInt32(run.count), offset)
            return nil
        case let .write(buffer, length, offset, false) where isCopied(offset: offset, length: length):
            io_uring_prep_write(get(), overlay, buffer, UInt32(length), offset)
            return nil
        default:
            return StorageOperation.runsOnWorker
        }
    }

    /// A Read wholly of chunks the host never wrote is sent from the base's mapping when the
    /// base has the range cached (see `FileBackend.readInPlace`).
    @inline(__always)
    public func readInPlace(offset: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        let run = sourceRun(offset: offset, length: length)
        guard !run.fromOverlay, run.count == length else { return nil }
        return base.file.readInPlace(offset: offset, length: length)
    }

    /// Runs `operation` to the end with plain system calls under the writer lock: on a storage
    /// worker thread (never a reactor), or in tests.
    public func perform(_ operation: StorageOperation) -> Int32 {
        writer.withLock { _ -> Int32 in
            switch operation {
            case let .read(buffer, length, offset):
                return read(buffer, length, offset)
            case let .write(buffer, length, offset, fua):
                let r = write(UnsafeRawPointer(buffer), length, offset)
                guard r >= 0, fua else { return r }
                let f = flush()
                return f < 0 ? f : r
            case .flush:
                return flush()
            case let .writeZeroes(offset, length, _):
                return writeZeroes(offset, length)
            case let .deallocate(offset, length):
                return deallocate(offset, length)
            }
        }
    }

    public func close() {}

    /// Forgets every write of this host: the clone reads as its base again.
    public func reset() -> Int32 {
        writer.withLock { _ -> Int32 in
            let r = map.clearAll()
            guard r == 0 else { return r }
            _ = fathom_fallocate(overlay, fathom_FALLOC_FL_PUNCH_HOLE | fathom_FALLOC_FL_KEEP_SIZE, 0, Int64(base.capacity))
            return 0
        }
    }

    // MARK: Routing (any thread, no lock)

    /// The bytes from `offset` (at most `length`) that come from one source: the overlay where
    /// the host wrote, the base elsewhere.
    @inline(__always)
    private func sourceRun(offset: UInt64, length: Int) -> (fromOverlay: Bool, count: Int) {
        let shift = UInt64(Self.chunkShift)
        let end = offset + UInt64(length)
        let fromOverlay = map.isSet(Int(offset >> shift))
        var runEnd = min(((offset >> shift) + 1) << shift, end)
        while runEnd < end, map.isSet(Int(runEnd >> shift)) == fromOverlay {
            runEnd = min(runEnd + (1 << shift), end)
        }
        return (fromOverlay, Int(runEnd - offset))
    }

    /// Every chunk the range touches is already in the overlay (a write needs no copy-up and
    /// changes no bit).
    @inline(__always)
    private func isCopied(offset: UInt64, length: Int) -> Bool {
        let shift = UInt64(Self.chunkShift)
        var chunk = Int(offset >> shift)
        let last = Int((offset + UInt64(length) - 1) >> shift)
        while chunk <= last {
            guard map.isSet(chunk) else { return false }
            chunk += 1
        }
        return true
    }

    // MARK: Operations (called with the writer lock held)

    private func read(_ buffer: UnsafeMutableRawPointer, _ length: Int, _ offset: UInt64) -> Int32 {
        var done = 0
        while done < length {
            let run = sourceRun(offset: offset + UInt64(done), length: length - done)
            let r = Self.preadFully(run.fromOverlay ? overlay : base.fd, buffer + done, run.count, offset + UInt64(done))
            guard r >= 0 else { return r }
            done += run.count
        }
        return Int32(length)
    }

    private func write(_ buffer: UnsafeRawPointer, _ length: Int, _ offset: UInt64) -> Int32 {
        let size = 1 << Self.chunkShift
        var done = 0
        while done < length {
            let at = offset + UInt64(done)
            let chunk = Int(at >> UInt64(Self.chunkShift))
            let chunkStart = UInt64(chunk) << UInt64(Self.chunkShift)
            let n = min(length - done, Int(chunkStart + UInt64(size) - at))
            if !map.isSet(chunk) && n < size {
                // Copy-up: the base's chunk with the new bytes laid over it, written whole, so
                // the chunk never holds part base, part hole.
                let whole = min(size, Int(base.capacity - chunkStart))
                let scratch = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
                defer { scratch.deallocate() }
                var r = Self.preadFully(base.fd, scratch, whole, chunkStart)
                guard r >= 0 else { return r }
                (scratch + Int(at - chunkStart)).copyMemory(from: buffer + done, byteCount: n)
                r = Self.pwriteFully(overlay, UnsafeRawPointer(scratch), whole, chunkStart)
                guard r >= 0 else { return r }
            } else {
                let r = Self.pwriteFully(overlay, buffer + done, n, at)
                guard r >= 0 else { return r }
            }
            map.set(chunk, true)
            done += n
        }
        return Int32(length)
    }

    private func writeZeroes(_ offset: UInt64, _ length: UInt64) -> Int32 {
        let size = 1 << Self.chunkShift
        let zeros = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        defer { zeros.deallocate() }
        memset(zeros, 0, size)
        var done: UInt64 = 0
        while done < length {
            let at = offset + done
            let chunkEnd = ((at >> UInt64(Self.chunkShift)) + 1) << UInt64(Self.chunkShift)
            let n = Int(min(length - done, chunkEnd - at))
            let r = write(UnsafeRawPointer(zeros), n, at)
            guard r >= 0 else { return r }
            done += UInt64(n)
        }
        return 0
    }

    /// Whole chunks go back to the base (map persisted first, then the blocks freed);
    /// partial chunks keep the host's data (deallocate is advisory).
    private func deallocate(_ offset: UInt64, _ length: UInt64) -> Int32 {
        let size = UInt64(1 << Self.chunkShift)
        let first = (offset + size - 1) / size
        let last = (offset + length) / size
        guard first < last else { return 0 }
        var freed: [Int] = []
        for c in Int(first)..<Int(last) where map.isSet(c) {
            map.set(c, false)
            freed.append(c)
        }
        guard !freed.isEmpty else { return 0 }
        // Sync the overlay too: the map pages written now may carry set bits of unflushed writes.
        guard fdatasync(overlay) == 0 else { return -errno }
        let r = map.persist()
        guard r == 0 else { return r }
        for c in freed {
            _ = fathom_fallocate(overlay, fathom_FALLOC_FL_PUNCH_HOLE | fathom_FALLOC_FL_KEEP_SIZE, Int64(UInt64(c) * size), Int64(size))
        }
        return 0
    }

    private func flush() -> Int32 {
        guard fdatasync(overlay) == 0 else { return -errno }
        return map.isDirty ? map.persist() : 0
    }

    static func preadFully(_ fd: Int32, _ p: UnsafeMutableRawPointer, _ count: Int, _ offset: UInt64) -> Int32 {
        var done = 0
        while done < count {
            let n = pread(fd, p + done, count - done, off_t(offset + UInt64(done)))
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return -errno }
            if n == 0 { memset(p + done, 0, count - done); break }  // past the end of a sparse overlay
            done += n
        }
        return Int32(clamping: count)
    }

    static func pwriteFully(_ fd: Int32, _ p: UnsafeRawPointer, _ count: Int, _ offset: UInt64) -> Int32 {
        var done = 0
        while done < count {
            let n = pwrite(fd, p + done, count - done, off_t(offset + UInt64(done)))
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return n < 0 ? -errno : -EIO }
            done += n
        }
        return Int32(clamping: count)
    }
}
