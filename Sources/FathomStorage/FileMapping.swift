import CMappingGuard
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A shared mapping of a namespace's file: the engine sends Read data from its pages
/// (`BlockBackend.readInPlace`) and, on tmpfs, the backend copies Write data into them — one
/// copy each, where `pread`/`pwrite` through a command buffer make two for reads, and a system
/// call each. (A file on a disk filesystem is mapped read-only, for its cached ranges: see
/// `PageCacheResidency`.)
///
/// Why it is safe although the file can shrink under it: a page past the file's end raises
/// SIGBUS when touched (so does a hole written when the tmpfs is full, and a page with a
/// memory error), which would end the daemon. The range is registered with the mapping
/// guard (`CMappingGuard`), whose handler maps zeros over such a page and counts the fault.
/// `bytes(at:count:)` touches every page of a Read before the kernel gets the range and hands
/// out nothing once a fault was counted: the Read then goes through `pread`, which ends short
/// past the end of the file (the host gets zeros, as for any file), and so does every later one.
/// `write(from:count:at:)` reports a write during which a fault was counted as not done, and
/// the backend repeats it with `pwrite`, whose result (ENOSPC, or the file extended again)
/// is what the host gets. A truncation between a Read's touch and the kernel's copy
/// (microseconds) makes that send fail with EFAULT, which ends the connection, not the process.
final class FileMapping {
    let base: UnsafeMutableRawPointer
    let length: Int
    private let slot: Int32

    let isWritable: Bool

    /// Maps the first `length` bytes of `fd` (`writable`: for writing too; `fd` must be open for
    /// it); nil where that or the guard fails (reads and writes then copy). `populate`: see
    /// `populateInBackground()`.
    init?(fd: Int32, length: Int, writable: Bool, populate: Bool) {
        guard length > 0, fathom_mapping_guard_install() == 0,
              let p = mmap(nil, length, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, 0), p != MAP_FAILED
        else { return nil }
        let slot = fathom_mapping_guard_add(p, length, writable ? 1 : 0)
        guard slot >= 0 else {
            munmap(p, length)
            return nil
        }
        base = p
        self.length = length
        self.slot = slot
        isWritable = writable
        if populate { populateInBackground() }
    }

    /// Tells the kernel a fault here is no sign of a sequential read: one that misses the page
    /// cache (a page evicted since the residency scan) then reads that page, not a readahead
    /// window around it (8 MiB on this VM's disk) while a reactor waits. Pages already cached
    /// around a fault are still mapped with it (fault-around).
    func adviseRandomAccess() {
        _ = madvise(base, length, MADV_RANDOM)
    }

    private let populating = Atomic<Bool>(false)

    /// Enters every page in the page tables (MADV_POPULATE_READ / _WRITE, Linux 5.14), as a
    /// memory namespace is populated at creation: otherwise the first access to each page is a
    /// fault on a reactor's thread — 4 KiB random writes over a 1 GiB file measured 185–246k
    /// IOPS in a new daemon's first 5 s against 265–309k in the next 5 s. Only for a file with no
    /// holes, where it allocates nothing. Off the caller's thread, 64 MiB at a time: it takes
    /// 0.12 s (read) and 0.35 s (write) per GiB here, which a large image's namespace should not
    /// wait for; faults that come first are served as before. One mapping after another on one
    /// serial queue, so that a daemon starting with many namespaces does not populate them all
    /// at once beside its reactors. The queue holds the mapping until it is done or
    /// `stopPopulating()` is called.
    private func populateInBackground() {
        populating.store(true, ordering: .relaxed)
        Self.populateQueue.async { [self] in
            let advice: Int32 = isWritable ? 23 : 22
            var offset = 0
            while offset < length, populating.load(ordering: .relaxed) {
                let n = min(64 << 20, length - offset)
                if madvise(base + offset, n, advice) != 0 { break }  // older kernel, or the file shrank
                offset += n
            }
        }
    }

    private static let populateQueue = DispatchQueue(label: "fathom.populate-mappings", qos: .utility)

    /// Ends a population still running (the namespace is being closed).
    func stopPopulating() { populating.store(false, ordering: .relaxed) }

    deinit {
        fathom_mapping_guard_remove(slot)
        munmap(base, length)
    }

    /// No page of the mapping has read as anything but the file so far.
    var isIntact: Bool { fathom_mapping_guard_faults(slot) == 0 }

    /// The `count` bytes at `offset` with every page of them mapped now; nil past the mapping,
    /// or once the file turned out shorter than the mapping (see the type's documentation).
    @inline(__always)
    func bytes(at offset: UInt64, count: Int) -> UnsafeMutableRawPointer? {
        guard offset <= UInt64(length), count <= length - Int(offset) else { return nil }
        let p = base + Int(offset)
        fathom_mapping_guard_touch(p, count)
        return isIntact ? p : nil
    }

    /// Copies `count` bytes from `source` into the file at `offset` through the mapping. False
    /// when nothing may be assumed written: past the mapping, not writable, or a page faulted
    /// (the file shrank, or the tmpfs is full and had no page for a hole) — the caller then
    /// writes with `pwrite`, whose result says which.
    @inline(__always)
    func write(from source: UnsafeRawPointer, count: Int, at offset: UInt64) -> Bool {
        guard isWritable, offset <= UInt64(length), count <= length - Int(offset), isIntact else { return false }
        (base + Int(offset)).copyMemory(from: source, byteCount: count)
        return isIntact
    }
}
