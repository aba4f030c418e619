#if canImport(Glibc)
import Glibc
#endif

/// Data buffers of one reactor, by power-of-two size class from 4 KiB to the largest
/// transfer. Buffers are page aligned (O_DIRECT needs it) and recycled through free
/// lists, so once warm a command takes no heap allocation. Only the owning thread uses it.
final class BufferPool {
    static let minimumShift = 12
    private var freeLists: [[UnsafeMutableRawPointer]]
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
        for list in freeLists { for p in list { free(p) } }
    }

    @inline(__always)
    static func sizeClass(_ bytes: Int) -> Int {
        let b = max(bytes, 1 << minimumShift)
        return (Int.bitWidth - (b - 1).leadingZeroBitCount) - minimumShift
    }

    /// A buffer of at least `bytes` (≤ the largest transfer) and its size class.
    @inline(__always)
    func take(_ bytes: Int) -> (UnsafeMutableRawPointer, Int) {
        let cls = Self.sizeClass(bytes)
        precondition(cls < freeLists.count, "buffer request above the largest transfer")
        if let p = freeLists[cls].popLast() { return (p, cls) }
        var p: UnsafeMutableRawPointer? = nil
        guard posix_memalign(&p, 4096, 1 << (cls + Self.minimumShift)) == 0, let buffer = p else {
            fatalError("out of memory for a \(bytes)-byte I/O buffer")
        }
        allocated += 1
        return (buffer, cls)
    }

    @inline(__always)
    func give(_ p: UnsafeMutableRawPointer, sizeClass: Int) {
        freeLists[sizeClass].append(p)
    }
}
