import CLiburing
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A namespace stored in a regular file (sparse is fine) or a raw block device, read and
/// written through the reactor's io_uring.
///
/// Buffered I/O is the default for files: it works on every filesystem and the page cache
/// serves the read-mostly dataset case well. O_DIRECT is the default for block devices.
/// FUA maps to RWF_DSYNC on the write itself, Flush to fdatasync, both on the ring.
public final class FileBackend: BlockBackend {
    public let path: String
    public let fd: Int32
    public let blockCount: UInt64
    public let blockSizeShift: UInt8
    public let isReadOnly: Bool
    public let isBlockDevice: Bool
    public let usesDirectIO: Bool

    /// The file lives on tmpfs or ramfs (`/dev/shm`, `/run`): its reads, writes and flushes are
    /// done at once with pread/pwrite on the calling reactor's thread instead of on the ring.
    ///
    /// Why not the ring: these filesystems do not take non-blocking I/O (`RWF_NOWAIT` fails
    /// with EOPNOTSUPP), so io_uring hands every operation on them to its worker threads — a
    /// thread handoff and a wakeup per command, which measured 118k IOPS for 4 KiB random reads
    /// QD32 against 321k for a memory namespace in the same run. Their data is memory: a
    /// pread or pwrite is a copy and never waits for a device (a tmpfs page swapped out must be
    /// read back, as a memory namespace's would).
    public let completesInline: Bool

    /// A file on tmpfs is mapped (`FileMapping`): Writes are copied into its pages instead of a
    /// `pwrite` each, and Reads are sent from them, as a memory namespace's are from its memory
    /// — one copy and no system call each (A/B against `pread`/`pwrite`: 4 KiB random reads
    /// 1.39×, 128 KiB reads 1.57×, 4 KiB random writes 1.48×).
    ///
    /// Reads only while the file has no holes: a mapping's read fault on a tmpfs hole allocates
    /// a page (where `pread` returns zeros without one), so reading a sparse scratch image in
    /// place would fill memory with zeros. Hence reads of a file that was sparse when opened
    /// stay on `pread`, and the first Deallocate or Write Zeroes (which punch holes) moves them
    /// there for as long as the backend lives. A write fault on a hole allocates the page as
    /// `pwrite` would, so writes use the mapping either way. Only tmpfs: ramfs files are few and
    /// report no allocated blocks to tell holes by. Seen from outside: the file's mtime moves on
    /// a page's first write through the mapping (for a file with no holes, when the mapping is
    /// populated at open), not on every write as with `pwrite`; its pages that hosts touched
    /// count in fathomd's VmRSS (`RssShmem`), though tmpfs holds them either way.
    ///
    /// A file on a local disk filesystem (ext4, XFS, Btrfs, F2FS) read through the page cache
    /// (not O_DIRECT) is mapped read-only, and a Read whose range `residency` saw wholly cached
    /// is sent from the mapping — one copy instead of two, and no storage operation; any other
    /// Read, and every Write, goes through the ring as before. Holes do not matter there: a
    /// read of a hole fills a page cache page with zeros through the mapping as through the ring.
    private let mapping: FileMapping?
    /// For a mapped file on a disk filesystem: which ranges are cached (see `PageCacheResidency`);
    /// nil on tmpfs, whose pages are all memory.
    private let residency: PageCacheResidency?
    /// Reads may use `mapping`: on tmpfs, while the file has had no holes (none when opened,
    /// none punched since); on a disk filesystem, always (per range, see `residency`).
    private let readsMayUseMapping: Atomic<Bool>

    /// Writes are being copied into the file's mapping now (see `mapping`).
    public var writesInPlace: Bool {
        guard let mapping else { return false }
        return mapping.isWritable && mapping.isIntact
    }

    /// Reads are being sent from the file's mapping now (see `mapping`); on a disk filesystem,
    /// those of the ranges that are cached.
    public var readsInPlace: Bool {
        guard let mapping else { return false }
        return mapping.isIntact && readsMayUseMapping.load(ordering: .relaxed)
    }

    /// For a file whose cached ranges are read from its mapping: how many of its 1 MiB chunks
    /// were wholly cached at the last scan, of how many.
    public var cachedChunks: (cached: Int, total: Int)? {
        residency.map { ($0.cachedChunks, $0.chunkCount) }
    }

    /// Reads of a file on a disk filesystem sent from its mapping so far (the others went
    /// through the ring), for `fathomctl namespace list`.
    public var readsFromMapping: Int { mappedReads.count.load(ordering: .relaxed) }

    /// Every reactor reading the namespace adds to it: kept in an allocation of its own so that
    /// the writes do not invalidate the cache line of the fields those reactors all read.
    private final class ReadCount { let count = Atomic<Int>(0) }
    private let mappedReads = ReadCount()

    /// Cached ranges of files on disk filesystems can be read from their mapping on this kernel
    /// (it has `cachestat(2)`, Linux 6.5; see `PageCacheResidency`).
    public static var kernelReportsCachedPages: Bool { PageCacheResidency.kernelReportsCachedPages }

    /// Opens `path`. `blockSize` applies to files; block devices report their own.
    /// `mapsTmpfsFiles: false` keeps tmpfs files on `pread` and `pwrite`, `mapsPageCache: false`
    /// every Read of a file on a disk filesystem on the ring (see `mapping`).
    public init(path: String, readOnly: Bool, directIO: Bool? = nil, blockSize: Int = 512,
                mapsTmpfsFiles: Bool = true, mapsPageCache: Bool = true) throws {
        var st = stat()
        guard stat(path, &st) == 0 else { throw StorageError(path: path, errno: errno, action: "cannot stat") }
        let isBlock = (st.st_mode & S_IFMT) == S_IFBLK
        guard isBlock || (st.st_mode & S_IFMT) == S_IFREG else {
            throw StorageError(path: path, errno: EINVAL, action: "not a regular file or block device:")
        }
        let direct = directIO ?? isBlock
        var flags = (readOnly ? O_RDONLY : O_RDWR) | O_CLOEXEC
        if direct { flags |= fathom_O_DIRECT }
        let fd = open(path, flags)
        guard fd >= 0 else { throw StorageError(path: path, errno: errno, action: "cannot open") }
        var bytes: UInt64
        var shift: UInt8
        if isBlock {
            var size: UInt64 = 0
            var sector: Int32 = 512
            guard ioctl(fd, fathom_BLKGETSIZE64, &size) == 0, ioctl(fd, fathom_BLKSSZGET, &sector) == 0 else {
                let e = errno
                Glibc.close(fd)
                throw StorageError(path: path, errno: e, action: "cannot read the geometry of")
            }
            bytes = size
            shift = UInt8(Int(sector).trailingZeroBitCount)
        } else {
            bytes = UInt64(st.st_size)
            shift = UInt8(blockSize.trailingZeroBitCount)
        }
        guard bytes >> UInt64(shift) > 0 else {
            Glibc.close(fd)
            throw StorageError(path: path, errno: EINVAL, action: "is smaller than one block:")
        }
        self.path = path
        self.fd = fd
        self.blockCount = bytes >> UInt64(shift)
        self.blockSizeShift = shift
        self.isReadOnly = readOnly
        self.isBlockDevice = isBlock
        self.usesDirectIO = direct
        let fsType = fathom_filesystem_type(fd)
        completesInline = !isBlock && (fsType == fathom_TMPFS_MAGIC || fsType == fathom_RAMFS_MAGIC)
        let dense = UInt64(st.st_blocks) * 512 >= UInt64(st.st_size)
        let length = Int(blockCount << UInt64(shift))
        let diskFilesystems = [fathom_EXT4_MAGIC, fathom_XFS_MAGIC, fathom_BTRFS_MAGIC, fathom_F2FS_MAGIC]
        if !isBlock && fsType == fathom_TMPFS_MAGIC && mapsTmpfsFiles && (dense || !readOnly) {
            mapping = FileMapping(fd: fd, length: length, writable: !readOnly, populate: dense)
            residency = nil
        } else if !isBlock && !direct && mapsPageCache && diskFilesystems.contains(fsType),
                  let residency = PageCacheResidency(fd: fd, length: length),
                  let mapping = FileMapping(fd: fd, length: length, writable: false, populate: false) {
            mapping.adviseRandomAccess()
            self.mapping = mapping
            self.residency = residency
        } else {
            mapping = nil
            residency = nil
        }
        readsMayUseMapping = Atomic(dense || residency != nil)
        var physical = Int(st.st_blksize)
        if isBlock {
            var pbs: UInt32 = 0
            if ioctl(fd, fathom_BLKPBSZGET, &pbs) == 0 { physical = Int(pbs) }
        }
        preferredWriteBlocks = UInt16(clamping: max(1, physical >> Int(shift)))
    }

    /// Holes punched in a file read as zeros. A block device's discard promises nothing, so
    /// it is not reported there (Write Zeroes still zeroes).
    public var deallocatedReadsZero: Bool { !isBlockDevice }

    /// The filesystem block or the device's physical block, in logical blocks.
    public let preferredWriteBlocks: UInt16

    public func allocatedBlocks() -> UInt64 {
        if isBlockDevice { return blockCount }
        var st = stat()
        guard fstat(fd, &st) == 0 else { return blockCount }
        return min(blockCount, (UInt64(st.st_blocks) * 512) >> UInt64(blockSizeShift))
    }

    @inline(__always)
    public func prepare(_ operation: StorageOperation, sqe get: () -> UnsafeMutablePointer<io_uring_sqe>) -> Int32? {
        switch operation {
        case let .read(buffer, length, offset):
            if completesInline { return Self.result(pread(fd, buffer, length, off_t(offset))) }
            io_uring_prep_read(get(), fd, buffer, UInt32(length), offset)
        case let .write(buffer, length, offset, fua):
            if isReadOnly { return -EROFS }
            // FUA: memory is as durable as tmpfs gets; there is no device to force.
            if completesInline {
                if let mapping, mapping.write(from: buffer, count: length, at: offset) { return Int32(length) }
                return Self.result(pwrite(fd, buffer, length, off_t(offset)))
            }
            let sqe = get()
            io_uring_prep_write(sqe, fd, buffer, UInt32(length), offset)
            if fua { fathom_sqe_set_rw_flags(sqe, fathom_RWF_DSYNC) }
        case .flush:
            if isReadOnly { return 0 }
            if completesInline { return fdatasync(fd) == 0 ? 0 : -errno }
            io_uring_prep_fsync(get(), fd, fathom_IORING_FSYNC_DATASYNC)
        case let .writeZeroes(offset, length, deallocate):
            if isReadOnly { return -EROFS }
            if residency == nil { readsMayUseMapping.store(false, ordering: .relaxed) }
            // Files: ZERO_RANGE keeps the blocks allocated, PUNCH_HOLE frees them (holes read
            // as zeros). Block devices take the same modes: the kernel maps them to the
            // device's write-zeroes and discard (blkdev_fallocate).
            let mode = deallocate ? fathom_FALLOC_FL_PUNCH_HOLE | fathom_FALLOC_FL_KEEP_SIZE
                                  : fathom_FALLOC_FL_ZERO_RANGE | fathom_FALLOC_FL_KEEP_SIZE
            io_uring_prep_fallocate(get(), fd, mode, off_t(offset), off_t(length))
        case let .deallocate(offset, length):
            if isReadOnly { return -EROFS }
            if residency == nil { readsMayUseMapping.store(false, ordering: .relaxed) }
            io_uring_prep_fallocate(get(), fd, fathom_FALLOC_FL_PUNCH_HOLE | fathom_FALLOC_FL_KEEP_SIZE, off_t(offset), off_t(length))
        }
        return nil
    }

    @inline(__always)
    public func readInPlace(offset: UInt64, length: Int) -> UnsafeMutableRawPointer? {
        guard let mapping, readsMayUseMapping.load(ordering: .relaxed) else { return nil }
        guard let residency else { return mapping.bytes(at: offset, count: length) }
        guard residency.isCached(offset: offset, count: length), let p = mapping.bytes(at: offset, count: length) else { return nil }
        mappedReads.count.add(1, ordering: .relaxed)
        return p
    }

    /// A pread/pwrite result as the ring would give it: bytes, or -errno.
    @inline(__always)
    private static func result(_ n: Int) -> Int32 { n >= 0 ? Int32(n) : -errno }

    private var closed = false

    /// Closes the descriptor (once). A namespace's backend lives as long as anything uses
    /// it — in-flight commands of a hot-removed namespace included — and closes on release.
    public func close() {
        guard !closed else { return }
        closed = true
        mapping?.stopPopulating()
        residency?.stop()
        Glibc.close(fd)
    }

    deinit { close() }

    /// Creates a sparse file of `bytes` if nothing exists at `path` (the demo image).
    /// The size of a block device in bytes (nil when it cannot be opened or asked), so a
    /// resize of the device can be noticed without reopening the namespace.
    public static func deviceSize(path: String) -> UInt64? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var size: UInt64 = 0
        return ioctl(fd, fathom_BLKGETSIZE64, &size) == 0 ? size : nil
    }

    public static func createSparse(path: String, bytes: UInt64) throws {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw StorageError(path: path, errno: errno, action: "cannot create") }
        defer { Glibc.close(fd) }
        var st = stat()
        if fstat(fd, &st) == 0, UInt64(st.st_size) >= bytes { return }
        guard ftruncate(fd, off_t(bytes)) == 0 else { throw StorageError(path: path, errno: errno, action: "cannot size") }
    }
}
