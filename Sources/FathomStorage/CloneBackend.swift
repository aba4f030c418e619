import CLiburing
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The shared, read-only base of a clone namespace: opened once, read by every host's
/// clone (its pages stay in the page cache for all of them).
public final class CloneBase {
    public let path: String
    let fd: Int32
    public let capacity: UInt64
    public let blockSizeShift: UInt8
    /// Identifies the base's contents in overlay maps (the namespace NGUID, hex).
    public let identity: String

    public init(path: String, blockSize: Int, identity: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StorageError(path: path, errno: errno, action: "cannot open the clone base") }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG || (st.st_mode & S_IFMT) == S_IFBLK else {
            Glibc.close(fd)
            throw StorageError(path: path, errno: EINVAL, action: "the clone base is not a regular file or block device:")
        }
        var bytes = UInt64(st.st_size)
        if (st.st_mode & S_IFMT) == S_IFBLK {
            var size: UInt64 = 0
            _ = ioctl(fd, fathom_BLKGETSIZE64, &size)
            bytes = size
        }
        self.path = path
        self.fd = fd
        blockSizeShift = UInt8(blockSize.trailingZeroBitCount)
        capacity = (bytes >> UInt64(blockSizeShift)) << UInt64(blockSizeShift)
        guard capacity > 0 else {
            Glibc.close(fd)
            throw StorageError(path: path, errno: EINVAL, action: "the clone base is smaller than one block:")
        }
        self.identity = identity
    }

    deinit { Glibc.close(fd) }
}

/// One host's writable view of a clone namespace: the shared base plus the host's own
/// copy-on-write overlay (a sparse file of the base's size) and its chunk map (see
/// `CloneMap` for the crash-safety order). Reads of chunks the host never wrote come from
/// the base; the first write to a chunk copies the rest of that chunk from the base (64 KiB
/// chunks, qcow2's default cluster size); deallocating whole chunks hands them back to the
/// base.
///
/// Operations run inline, with plain preadv/pwrite on the reactor thread, under one lock
/// per host and namespace: the copy-up of a chunk must not interleave with another write to
/// it, and one host's queues may live on several reactors. Hosts never contend with each
/// other. (Not io_uring: a copy-up is a read-modify-write chain; see docs/datasets.md.)
public final class CloneBackend: BlockBackend {
    public let base: CloneBase
    public let host: String
    public let overlayPath: String
    public var blockCount: UInt64 { base.capacity >> UInt64(base.blockSizeShift) }
    public var blockSizeShift: UInt8 { base.blockSizeShift }
    public var isReadOnly: Bool { false }
    private let overlay: Int32
    private let state: Mutex<CloneMap>
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
            let map = try CloneMap(path: overlayPath + ".map", capacity: base.capacity, chunkShift: Self.chunkShift,
                                   baseIdentity: base.identity, host: host)
            state = Mutex(map)
        } catch {
            Glibc.close(fd)
            throw error
        }
        overlay = fd
    }

    deinit { Glibc.close(overlay) }

    /// Chunks the host has written, and their bytes.
    public var writtenBytes: UInt64 { state.withLock { UInt64($0.allocatedChunks) << UInt64(Self.chunkShift) } }

    public func allocatedBlocks() -> UInt64 { writtenBytes >> UInt64(blockSizeShift) }
    /// Deallocated chunks read as the base again, not as zeros.
    public var deallocatedReadsZero: Bool { false }
    public var preferredWriteBlocks: UInt16 { UInt16(clamping: (1 << Self.chunkShift) >> Int(blockSizeShift)) }

    public func prepare(_ operation: StorageOperation, sqe: () -> UnsafeMutablePointer<io_uring_sqe>) -> Int32? {
        state.withLock { map -> Int32 in
            switch operation {
            case let .read(buffer, length, offset):
                return read(map, buffer, length, offset)
            case let .write(buffer, length, offset, fua):
                let r = write(&map, UnsafeRawPointer(buffer), length, offset)
                guard r >= 0, fua else { return r }
                let f = flush(map)
                return f < 0 ? f : r
            case .flush:
                return flush(map)
            case let .writeZeroes(offset, length, _):
                return writeZeroes(&map, offset, length)
            case let .deallocate(offset, length):
                return deallocate(&map, offset, length)
            }
        }
    }

    public func close() {}

    /// Forgets every write of this host: the clone reads as its base again.
    public func reset() -> Int32 {
        state.withLock { map -> Int32 in
            let r = map.clearAll()
            guard r == 0 else { return r }
            _ = fathom_fallocate(overlay, fathom_FALLOC_FL_PUNCH_HOLE | fathom_FALLOC_FL_KEEP_SIZE, 0, Int64(base.capacity))
            return 0
        }
    }

    // MARK: Operations (called with the lock held)

    private func read(_ map: CloneMap, _ buffer: UnsafeMutableRawPointer, _ length: Int, _ offset: UInt64) -> Int32 {
        var done = 0
        while done < length {
            let at = offset + UInt64(done)
            let chunk = Int(at >> UInt64(Self.chunkShift))
            // A run of chunks from the same source is one read.
            var end = min(UInt64(chunk + 1) << UInt64(Self.chunkShift), offset + UInt64(length))
            let fromOverlay = map.isSet(chunk)
            while end < offset + UInt64(length), map.isSet(Int(end >> UInt64(Self.chunkShift))) == fromOverlay {
                end = min(end + UInt64(1 << Self.chunkShift), offset + UInt64(length))
            }
            let r = Self.preadFully(fromOverlay ? overlay : base.fd, buffer + done, Int(end - at), at)
            guard r >= 0 else { return r }
            done += Int(end - at)
        }
        return Int32(length)
    }

    private func write(_ map: inout CloneMap, _ buffer: UnsafeRawPointer, _ length: Int, _ offset: UInt64) -> Int32 {
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

    private func writeZeroes(_ map: inout CloneMap, _ offset: UInt64, _ length: UInt64) -> Int32 {
        let size = 1 << Self.chunkShift
        let zeros = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 4096)
        defer { zeros.deallocate() }
        memset(zeros, 0, size)
        var done: UInt64 = 0
        while done < length {
            let at = offset + done
            let chunkEnd = ((at >> UInt64(Self.chunkShift)) + 1) << UInt64(Self.chunkShift)
            let n = Int(min(length - done, chunkEnd - at))
            let r = write(&map, UnsafeRawPointer(zeros), n, at)
            guard r >= 0 else { return r }
            done += UInt64(n)
        }
        return 0
    }

    /// Whole chunks go back to the base (map persisted first, then the blocks freed);
    /// partial chunks keep the host's data (deallocate is advisory).
    private func deallocate(_ map: inout CloneMap, _ offset: UInt64, _ length: UInt64) -> Int32 {
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

    private func flush(_ map: CloneMap) -> Int32 {
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
