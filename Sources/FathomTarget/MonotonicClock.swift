#if canImport(Glibc)
import Glibc
#endif

/// Milliseconds on CLOCK_MONOTONIC: keep-alive deadlines must not jump with wall time.
public enum MonotonicClock {
    public static func nowMs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
    }

    /// Nanoseconds, for short budgets (a reactor's busy polling).
    @inline(__always)
    public static func nowNs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
