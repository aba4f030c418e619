#if canImport(Glibc)
import Glibc
#endif

/// Deterministic test data (xorshift), the same for every test target.
public func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var x = seed &* 0x9E37_79B9_7F4A_7C15 | 1
    return (0..<count).map { _ in
        x ^= x << 13
        x ^= x >> 7
        x ^= x << 17
        return UInt8(truncatingIfNeeded: x)
    }
}

/// Polls `condition` for up to `seconds` (the target acts on its own threads); true once it holds.
public func eventually(seconds: Double = 5, _ condition: () -> Bool) -> Bool {
    var waited = 0.0
    while waited < seconds {
        if condition() { return true }
        usleep(50_000)
        waited += 0.05
    }
    return condition()
}
