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
///
/// The free lists are plain stacks in raw memory, sized when a slab is added, not Swift
/// arrays: a nested array's every push and pop checks both levels for uniqueness.
final class BufferPool {
    struct Buffer {
        var pointer: UnsafeMutableRawPointer
        /// Registered-buffer index of the buffer's slab, or -1.
        var fixedIndex: Int32
    }

    static let minimumShift = 12
    static let slabBytes = 1 << 20
    /// A stack of free buffers of one size class; `capacity` is every buffer of the class.
    private struct FreeList {
        var items: UnsafeMutablePointer<Buffer>? = nil
        var count = 0
        var capacity = 0
    }
    private let freeLists: UnsafeMutablePointer<FreeList>
    private let classCount: Int
    /// Registers a new slab with the ring and returns its index (or -1).
    var registerSlab: ((UnsafeMutableRawPointer, Int) -> Int32)?
    /// Told the size of each slab mapped (the daemon's status reports what the pools hold:
    /// registered slabs are pinned by the kernel, so all of it is resident).
    var slabAdded: ((Int) -> Void)?
    private var slabs: [(UnsafeMutableRawPointer, Int)] = []
    let maxShift: Int
    private(set) var allocated = 0

    init(maxBytes: Int) {
        var shift = Self.minimumShift
        while (1 << shift) < maxBytes { shift += 1 }
        maxShift = shift
        classCount = shift - Self.minimumShift + 1
        freeLists = .allocate(capacity: classCount)
        freeLists.initialize(repeating: FreeList(), count: classCount)
    }

    deinit {
        for (p, n) in slabs { munmap(p, n) }
        for c in 0..<classCount { freeLists[c].items?.deallocate() }
        freeLists.deallocate()
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
        precondition(cls < classCount, "buffer request above the largest transfer")
        let list = freeLists + cls
        if list.pointee.count == 0 { addSlab(sizeClass: cls) }
        list.pointee.count -= 1
        return (list.pointee.items![list.pointee.count], cls)
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
        slabAdded?(bytes)
        let list = freeLists + cls
        let added = bytes / size
        // Room for every buffer of the class, so `give` never needs to grow the stack.
        let grown = UnsafeMutablePointer<Buffer>.allocate(capacity: list.pointee.capacity + added)
        if let old = list.pointee.items {
            grown.moveInitialize(from: old, count: list.pointee.count)
            old.deallocate()
        }
        list.pointee.items = grown
        list.pointee.capacity += added
        for k in stride(from: bytes - size, through: 0, by: -size) {
            (grown + list.pointee.count).initialize(to: Buffer(pointer: p + k, fixedIndex: fixed))
            list.pointee.count += 1
        }
        allocated += added
    }

    @inline(__always)
    func give(_ b: Buffer, sizeClass: Int) {
        let list = freeLists + sizeClass
        precondition(list.pointee.count < list.pointee.capacity, "buffer given back twice")
        (list.pointee.items! + list.pointee.count).initialize(to: b)
        list.pointee.count += 1
    }
}
