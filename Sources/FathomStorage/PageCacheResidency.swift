import CLiburing
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Which 1 MiB chunks of a file on a disk filesystem are wholly in the page cache (or holes),
/// as last seen by a background scan: a Read whose range lies in such chunks may be sent from the
/// file's mapping (`FileBackend`) without its reactor waiting for the disk.
///
/// Why: a buffered Read through the ring copies the cached pages into a command buffer and
/// `sendmsg` copies that buffer into the socket — two copies where the design allows one, and
/// a storage operation per command. Sent from the mapping it is one copy and no operation
/// (A/B on a cached 1 GiB file: see docs/benchmarks.md). But a mapping's page that is not
/// cached is read from the disk *by the fault*, on the reactor's thread, stalling every
/// connection of that reactor for a disk read; asking the kernel per Read (`mincore`, tried
/// in an earlier session) cost as much as the copy it saves. So the question is asked per
/// chunk, off the reactors: once a second a scanner thread asks `cachestat(2)` (Linux 6.5)
/// how much of each mapped file is cached — one call for a file that is cached whole (0.9 ms
/// per GiB here), else per 64 MiB region, and per chunk of a region readable only in part
/// (holes count as readable: see `readability`), at most `scanBudget` system calls a
/// second over all files — and a Read checks one bit per chunk it spans.
///
/// What is left: a page evicted since the last scan (memory pressure, or another process's
/// O_DIRECT write, which drops the cached pages of its range) is read by the fault, on the
/// reactor, until the next scan clears its chunk. Pages hosts read through the mapping are
/// marked accessed and so are the last the kernel evicts. Kernels without `cachestat` get
/// no residency, and every Read goes through the ring as before.
final class PageCacheResidency: @unchecked Sendable {
    static let chunkShift = 20
    static let chunksPerWord = 64

    /// The file, not owned: `stop()` must be called before it is closed.
    private let fd: Int32
    let length: Int
    let chunkCount: Int
    private let wordCount: Int
    /// One bit per chunk, set while the chunk was wholly cached at the last scan. Written by
    /// the scanner, read by reactors (relaxed: a stale bit means one Read copied that need not
    /// have been, or the fault described above).
    private let words: UnsafeMutablePointer<Atomic<UInt64>>
    /// The scanner's state for this file: where its next scan starts, and whether the file is
    /// still open (`stop()` waits for a scan in progress, so `fd` is never asked after close).
    private let scanState = Mutex<(open: Bool, nextWord: Int)>((true, 0))
    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
    /// The file's size at the start of the scan in progress (the file may have shrunk).
    private var fileSize = 0

    /// The kernel has `cachestat(2)` (asked with a descriptor that cannot be valid: EBADF
    /// where it has, ENOSYS where it has not).
    static let kernelReportsCachedPages = fathom_cached_pages(-1, 0, 4096) != -Int64(ENOSYS)

    /// nil where the kernel cannot say what is cached (no `cachestat`), or for an empty file.
    /// Scans the file once before returning (a cached image is read from its mapping from the
    /// first command on), then leaves it to the scanner.
    init?(fd: Int32, length: Int) {
        guard length > 0, Self.kernelReportsCachedPages, fathom_cached_pages(fd, 0, UInt64(Self.pageSize)) >= 0 else { return nil }
        self.fd = fd
        self.length = length
        chunkCount = (length + (1 << Self.chunkShift) - 1) >> Self.chunkShift
        wordCount = (chunkCount + Self.chunksPerWord - 1) / Self.chunksPerWord
        words = .allocate(capacity: wordCount)
        for i in 0..<wordCount { (words + i).initialize(to: Atomic(0)) }
        var budget = Self.scanBudget
        scan(budget: &budget)
        ResidencyScanner.shared.add(self)
    }

    deinit {
        stop()
        words.deinitialize(count: wordCount)
        words.deallocate()
    }

    /// Every chunk of `count` bytes at `offset` was wholly cached at the last scan.
    @inline(__always)
    func isCached(offset: UInt64, count: Int) -> Bool {
        guard count > 0, offset < UInt64(length), count <= length - Int(offset) else { return false }
        var chunk = Int(offset >> UInt64(Self.chunkShift))
        let last = Int((offset + UInt64(count) - 1) >> UInt64(Self.chunkShift))
        while chunk <= last {
            if words[chunk >> 6].load(ordering: .relaxed) & (1 << UInt64(chunk & 63)) == 0 { return false }
            chunk += 1
        }
        return true
    }

    /// Chunks wholly cached at the last scan.
    var cachedChunks: Int {
        (0..<wordCount).reduce(0) { $0 + words[$1].load(ordering: .relaxed).nonzeroBitCount }
    }

    /// No more scans; waits for one in progress. Called before the file is closed.
    func stop() {
        scanState.withLock { $0.open = false }
    }

    /// Most system calls one scanner pass makes, over all files (a partly cached 1 TiB
    /// image would otherwise take a million a second): a file past the budget is continued
    /// where it stopped at the next pass.
    static let scanBudget = 4096

    /// Brings the bits up to date, from where the last scan of this file stopped, spending at
    /// most `budget` calls. Returns true once the whole file was covered.
    @discardableResult
    func scan(budget: inout Int) -> Bool {
        scanState.withLock { state in
            guard state.open else { return true }
            guard budget > 0 else { return false }
            var st = stat()
            budget -= 1
            fileSize = fstat(fd, &st) == 0 ? Int(st.st_size) : 0
            if fileSize < length {
                // Shrunk: nothing from the region holding the new end on is read in place
                // until scanned again (the region's chunks before the end come back then).
                for w in (fileSize >> (Self.chunkShift + 6))..<wordCount { words[w].store(0, ordering: .relaxed) }
            }
            if state.nextWord == 0 {
                // A file cached whole, the usual dataset image, in one call.
                budget -= 1
                if length <= fileSize, cachedPages(0, length) >= pages(length) {
                    for w in 0..<wordCount { words[w].store(fullMask(w), ordering: .relaxed) }
                    return true
                }
            }
            while state.nextWord < wordCount, budget > 0 {
                let w = state.nextWord
                words[w].store(scanWord(w, budget: &budget), ordering: .relaxed)
                state.nextWord += 1
            }
            guard state.nextWord == wordCount else { return false }
            state.nextWord = 0
            return true
        }
    }

    /// The bits of one 64 MiB region: one check when it is readable whole or cold whole, else
    /// one per chunk.
    private func scanWord(_ w: Int, budget: inout Int) -> UInt64 {
        let start = w << (Self.chunkShift + 6)
        let end = min(length, start + (1 << (Self.chunkShift + 6)))
        switch readability(start, end, budget: &budget) {
        case .all: return fullMask(w)
        case .none: return 0
        case .some: break
        }
        var bits: UInt64 = 0
        var chunkStart = start
        var bit: UInt64 = 1
        while chunkStart < end {
            let chunkEnd = min(end, chunkStart + (1 << Self.chunkShift))
            if readability(chunkStart, chunkEnd, budget: &budget) == .all { bits |= bit }
            chunkStart = chunkEnd
            bit <<= 1
        }
        return bits
    }

    /// `all`: every page of a range reads without the disk; `none`: no page of it is cached and
    /// it has no hole (a cold range: nothing smaller in it need be asked); `some`: anything else.
    private enum Readability { case all, none, some }

    /// Whether the pages of [start, end) read without the disk: cached, or in a hole, which reads
    /// as zeros that the filesystem fills in itself (a dataset image built by mkfs has holes
    /// nobody ever reads into the cache). One `cachestat` when the range is cached whole; else
    /// its data segments (SEEK_DATA / SEEK_HOLE) are asked one by one, until one is not cached.
    /// `some` once `budget` runs out (that range copies until the next pass).
    private func readability(_ start: Int, _ end: Int, budget: inout Int) -> Readability {
        guard end <= fileSize else { return .some }  // shrunk: past its end a page is SIGBUS
        budget -= 1
        let cached = cachedPages(start, end - start)
        if cached >= pages(end - start) { return .all }
        var at = start
        while at < end {
            guard budget > 0 else { return .some }
            budget -= 3
            let data = lseek(fd, off_t(at), SEEK_DATA)
            if data < 0 { return errno == ENXIO ? .all : .some }  // ENXIO: holes to the end of the file
            if data >= off_t(end) { return .all }
            let hole = lseek(fd, data, SEEK_HOLE)
            guard hole > data else { return .some }
            if cached == 0 && data == off_t(start) && hole >= off_t(end) { return .none }
            let first = Int(data) & ~(Self.pageSize - 1)
            let last = min(Int(hole), end)
            if cachedPages(first, last - first) < pages(last - first) { return .some }
            at = last
        }
        return .all
    }

    private func fullMask(_ w: Int) -> UInt64 {
        let chunks = min(Self.chunksPerWord, chunkCount - w * Self.chunksPerWord)
        return chunks == 64 ? ~0 : (1 << UInt64(chunks)) - 1
    }

    private func pages(_ bytes: Int) -> Int64 { Int64((bytes + Self.pageSize - 1) / Self.pageSize) }

    /// -errno counts as nothing cached: the Reads copy.
    private func cachedPages(_ offset: Int, _ bytes: Int) -> Int64 {
        max(0, fathom_cached_pages(fd, UInt64(offset), UInt64(bytes)))
    }
}

/// The one thread that rescans every mapped file's page-cache residency once a second
/// (see `PageCacheResidency`). It holds the files weakly: a namespace's backend going away
/// takes its file off the list.
final class ResidencyScanner: @unchecked Sendable {
    static let shared = ResidencyScanner()

    private struct Entry { weak var residency: PageCacheResidency? }
    private let entries = Mutex<[Entry]>([])
    private let queue = DispatchQueue(label: "fathom.page-cache-residency", qos: .utility)
    private var timer: DispatchSourceTimer?
    /// Which file the next pass starts with: files past one pass's budget go first next time.
    private var first = 0

    func add(_ residency: PageCacheResidency) {
        entries.withLock { $0.append(Entry(residency: residency)) }
        queue.async { [self] in
            guard timer == nil else { return }
            let t = DispatchSource.makeTimerSource(queue: queue)
            t.schedule(deadline: .now() + 1, repeating: 1, leeway: .milliseconds(100))
            t.setEventHandler { [self] in pass() }
            t.resume()
            timer = t
        }
    }

    private func pass() {
        let files = entries.withLock { list -> [PageCacheResidency] in
            list.removeAll { $0.residency == nil }
            return list.compactMap(\.residency)
        }
        guard !files.isEmpty else { return }
        var budget = PageCacheResidency.scanBudget
        let start = first % files.count
        for i in 0..<files.count where budget > 0 {
            let index = (start + i) % files.count
            if !files[index].scan(budget: &budget) { first = index; return }
        }
        first = 0
    }
}
