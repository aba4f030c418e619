#if canImport(Glibc)
import Glibc
#endif

/// A connected or listening AF_UNIX stream socket, closed on deinit. Only what the control
/// channel needs: one request line in, one response line out.
final class UnixSocket {
    let fd: Int32

    init(fd: Int32) { self.fd = fd }
    deinit { Glibc.close(fd) }

    static func address(_ path: String) throws(ControlError) -> sockaddr_un {
        var sa = sockaddr_un()
        sa.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: sa.sun_path) else {
            throw ControlError("the control socket path \(path) is longer than \(MemoryLayout.size(ofValue: sa.sun_path) - 1) bytes")
        }
        withUnsafeMutableBytes(of: &sa.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
        }
        return sa
    }

    /// Connects to a listening socket at `path`.
    static func connect(path: String) throws(ControlError) -> UnixSocket {
        var sa = try address(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlError("cannot create a socket: \(String(cString: strerror(errno)))") }
        let s = UnixSocket(fd: fd)
        var rc: Int32
        repeat {
            rc = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        } while rc != 0 && errno == EINTR
        guard rc == 0 else {
            let e = errno
            var hint = ""
            if e == ENOENT || e == ECONNREFUSED { hint = " (is fathomd running? its --control-socket and fathomctl's --socket must match)" }
            if e == EACCES { hint = " (the socket is owner-only: run fathomctl as the user that runs fathomd)" }
            throw ControlError("cannot connect to \(path): \(String(cString: strerror(e)))\(hint)")
        }
        return s
    }

    /// Sets a receive and send timeout, so a stalled peer cannot hold the other side.
    func setTimeout(seconds: Int) {
        var tv = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    func writeAll(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { return false }
            sent += n
        }
        return true
    }

    /// Reads up to the first newline (or end of stream), at most `limit` bytes.
    func readLine(limit: Int) -> [UInt8]? {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while out.count <= limit {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return nil }
            if n == 0 { return out.isEmpty ? nil : out }
            if let nl = chunk[0..<n].firstIndex(of: 0x0A) {
                out += chunk[0..<nl]
                return out
            }
            out += chunk[0..<n]
        }
        return nil
    }
}

public struct ControlError: Error, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
