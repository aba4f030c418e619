#if canImport(Glibc)
import Glibc
#endif

/// Replaces a file so that a crash at any moment leaves either the old contents or the new.
enum AtomicFile {
    static func write(_ bytes: [UInt8], to path: String) throws(ControlError) {
        let temp = "\(path).tmp-\(getpid())"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw ControlError("cannot write \(temp): \(String(cString: strerror(errno)))") }
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let e = errno
                close(fd)
                unlink(temp)
                throw ControlError("cannot write \(temp): \(String(cString: strerror(e)))")
            }
            written += n
        }
        guard fsync(fd) == 0 else {
            let e = errno
            close(fd)
            unlink(temp)
            throw ControlError("cannot sync \(temp): \(String(cString: strerror(e)))")
        }
        close(fd)
        guard rename(temp, path) == 0 else {
            let e = errno
            unlink(temp)
            throw ControlError("cannot replace \(path): \(String(cString: strerror(e)))")
        }
        let dir = path.contains("/") ? String(path[..<path.lastIndex(of: "/")!]) : "."
        let dfd = open(dir.isEmpty ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            fsync(dfd)
            close(dfd)
        }
    }
}
