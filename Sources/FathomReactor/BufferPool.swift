#if canImport(Glibc)
import Glibc
#endif

/// Data buffers of one reactor, by power-of-two size class from 4 KiB to the largest
/// transfer. Buffers are page aligned (O_DIRECT needs it) and recycled through free
/// lists, so once warm a command takes no heap allocation. Only the owning thread uses it.
///
/// Buffers are carved from 1 MiB slabs mapped straight from the kernel rather than taken one
/// by one from malloc: `posix_memalign` puts its bookkeeping in the page before each aligned
/// buffer, which doubled the address space of 4 KiB buffers and made every buffer cost a
/// resident page even when its own page was never touched (a null namespace's reads).
///
/// Each slab is offered to the ring as a registered buffer (`registerSlab`); a buffer carries
/// its slab's index (or -1) so storage I/O on it can use READ_FIXED / WRITE_FIXED.
final class BufferPool {
    struct Buffer {
        var pointer: UnsafeMutableRawPointer
        /// Registered-buffer index of the buffer's slab, or -1.
        var fixedIndex: Int32
    }

    static let minimumShift = 12
    static let slabBytes = 1 << 20
    private var freeLists: [[Buffer]]
    /// Registers a new slab with the ring and returns its index (or -1).
    var registerSlab: ((UnsafeMutableRawPointer, Int) -> Int32)?
    private var slabs: [(UnsafeMutableRawPointer, Int)] = []
    let maxShift: Int
    private(set) var allocated = 0

    init(maxBytes: Int) {
        var shift = Self.minimumShift
        while (1 << shift) < maxBytes { shift += 1 }
        maxShift = shift
        freeLists = Array(repeating: [], count: shift - Self.minimumShift + 1)
        for i in freeLists.indices { freeLists[i].reserveCapacity(256) }
    }

    deinit {
        for (p, n) in slabs { munmap(p, n) }
    }

    @inline(__always)
    static func sizeClass(_ bytes: Int) -> Int {
        let b = max(bytes, 1 << minimumShift)
        return (Int.bitWidth - (b - 1).leadingZeroBitCount) - minimumShift
    }

    /// A buffer of at least `bytes` (≤ the largest transfer) and its size class.
    @inline(__always)
    func take(_ bytes: Int) -> (Buffer, Int) {
        let cls = Self.sizeClass(bytes)
        precondition(cls < freeLists.count, "buffer request above the largest transfer")
        if let p = freeLists[cls].popLast() { return (p, cls) }
        addSlab(sizeClass: cls)
        return (freeLists[cls].popLast()!, cls)
    }

    /// Maps one slab and puts its buffers of class `cls` on the free list.
    private func addSlab(sizeClass cls: Int) {
        let size = 1 << (cls + Self.minimumShift)
        let bytes = max(Self.slabBytes, size)
        guard let p = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), p != MAP_FAILED else {
            fatalError("out of memory for \(bytes) bytes of I/O buffers")
        }
        slabs.append((p, bytes))
        let fixed = registerSlab?(p, bytes) ?? -1
        for k in stride(from: bytes - size, through: 0, by: -size) { freeLists[cls].append(Buffer(pointer: p + k, fixedIndex: fixed)) }
        allocated += bytes / size
    }

    @inline(__always)
    func give(_ b: Buffer, sizeClass: Int) {
        freeLists[sizeClass].append(b)
    }
}
