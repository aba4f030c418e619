/// The 64-bit io_uring user_data of every SQE: what completed, for which connection
/// (index and generation, so a completion can never reach a reused connection slot) and
/// which command slot.
struct UserData {
    enum Kind: UInt8 {
        case recv = 1, send, storage, accept, wake, tick
    }

    var kind: Kind
    var connection: Int
    var generation: UInt16
    var slot: Int

    init(_ kind: Kind, connection: Int = 0, generation: UInt16 = 0, slot: Int = 0) {
        self.kind = kind
        self.connection = connection
        self.generation = generation
        self.slot = slot
    }

    @inline(__always)
    init?(_ raw: UInt64) {
        guard let k = Kind(rawValue: UInt8(truncatingIfNeeded: raw)) else { return nil }
        kind = k
        slot = Int((raw >> 8) & 0xFFFF)
        connection = Int((raw >> 24) & 0xFF_FFFF)
        generation = UInt16(truncatingIfNeeded: raw >> 48)
    }

    @inline(__always)
    var raw: UInt64 {
        UInt64(kind.rawValue) | UInt64(slot & 0xFFFF) << 8 | UInt64(connection & 0xFF_FFFF) << 24 | UInt64(generation) << 48
    }
}
