import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The type ("tmpfs", "ext4"…) of the filesystem holding `path` (the longest mount point that
/// is a prefix of it), from /proc/mounts: what a test expects of the code under test is not
/// asked of that code.
public func filesystemType(holding path: String) -> String? {
    guard let mounts = try? String(contentsOfFile: "/proc/mounts", encoding: .utf8) else { return nil }
    var best: [String]? = nil
    for line in mounts.split(separator: "\n") {
        let e = line.split(separator: " ").map(String.init)  // device, mount point, type, ...
        guard e.count > 2, path == e[1] || path.hasPrefix(e[1] == "/" ? "/" : e[1] + "/") else { continue }
        if best == nil || e[1].count >= best![1].count { best = e }  // a later mount covers an earlier one
    }
    return best?[2]
}

/// The filesystem holding `path` is one whose page cache fathomd maps for cached reads (the
/// disk filesystems of `FileBackend`'s list, named as /proc/mounts names them).
public func isPageCacheMappedFilesystem(holding path: String) -> Bool {
    ["ext4", "xfs", "btrfs", "f2fs"].contains(filesystemType(holding: path) ?? "")
}

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
