import CMappingGuard
#if canImport(Glibc)
import Glibc
#endif

/// A read-only shared mapping of a namespace's file on tmpfs, from which the engine sends Read
/// data in place (`BlockBackend.readInPlace`): one copy, page → socket, where `pread` makes two
/// (page → command buffer → socket) and a system call.
///
/// Why it is safe although the file can shrink under it: a page past the file's end raises
/// SIGBUS when touched, which would end the daemon. The range is registered with the mapping
/// guard (`CMappingGuard`), whose handler maps zeros over such a page and counts the fault.
/// `bytes(at:length:)` touches every page of a Read before the kernel gets the range and hands
/// out nothing once a fault was counted: the Read then goes through `pread`, which ends short
/// past the end of the file (the host gets an error status), and so does every later one. A
/// truncation between the touch and the kernel's copy (microseconds) makes that send fail with
/// EFAULT, which ends the connection, not the process.
final class FileMapping {
    let base: UnsafeMutableRawPointer
    let length: Int
    private let slot: Int32

    /// Maps the first `length` bytes of `fd`; nil where that or the guard fails (reads then copy).
    init?(fd: Int32, length: Int) {
        guard length > 0, fathom_mapping_guard_install() == 0,
              let p = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else { return nil }
        let slot = fathom_mapping_guard_add(p, length)
        guard slot >= 0 else {
            munmap(p, length)
            return nil
        }
        base = p
        self.length = length
        self.slot = slot
    }

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
}
