import CLiburing

/// A connection's provided-buffer ring: the buffers its multishot recv reads into.
///
/// Why one ring per connection and not one per reactor: a buffer stays out of the ring until
/// the connection has parsed it, and a connection that stops reading (a fatal error being
/// reported, shutdown) keeps what it holds. With a shared ring one such connection, or one
/// host streaming write data faster than the reactor parses, would leave the others without
/// buffers (their multishot recvs ending with ENOBUFS). Per connection, running dry only
/// pauses that connection, which is TCP flow control working as it should.
///
/// Four 4 KiB buffers: a burst of 32 read capsules (72 bytes each) fits one, a queue's worth
/// (127) two. Write data is not meant to come through them (the connection leaves multishot
/// recv when it flows, see `Connection.noteDataTraffic`). Eight 8 KiB buffers measured the
/// same for reads (A/B within noise) and cost 6 MiB more resident memory with 144 connections
/// (each ring's buffers are all touched sooner or later, where a staging buffer is touched
/// only as far as the largest read).
struct ReceiveBufferRing {
    static let bufferCount = 4
    static let bufferSize = 4 * 1024

    let group: UInt16
    private let entries: UnsafeMutableRawPointer
    private let memory: UnsafeMutableRawPointer

    /// Registers a ring as buffer group `group` and gives the kernel every buffer. Nil when
    /// the kernel refuses it (the connection then reads with single recvs).
    init?(ring: Ring, group: UInt16) {
        entries = .allocate(byteCount: 4096, alignment: 4096)
        memory = .allocate(byteCount: Self.bufferCount * Self.bufferSize, alignment: 4096)
        self.group = group
        guard ring.registerBufferRing(entries, count: Self.bufferCount, group: group) == 0 else {
            entries.deallocate()
            memory.deallocate()
            return nil
        }
        for bid in 0..<Self.bufferCount { recycle(bid) }
    }

    @inline(__always)
    func address(_ bid: Int) -> UnsafeMutableRawPointer { memory + bid * Self.bufferSize }

    /// Gives buffer `bid` back to the kernel once its bytes are parsed or copied.
    @inline(__always)
    func recycle(_ bid: Int) {
        fathom_buf_ring_recycle(entries, UInt32(Self.bufferCount), address(bid), UInt32(Self.bufferSize), UInt16(bid))
    }

    /// Unregisters the group and frees the memory. Only once no recv of the group is in
    /// the kernel (the connection's `inflight` is 0).
    func release(ring: Ring) {
        ring.unregisterBufferRing(group: group)
        entries.deallocate()
        memory.deallocate()
    }
}
