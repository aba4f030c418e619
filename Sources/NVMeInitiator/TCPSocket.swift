#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP socket with a receive timeout: the test host never hangs forever on a
/// target that stopped answering.
public final class TCPSocket {
    public let fd: Int32

    public init(host: String, port: UInt16, timeoutSeconds: Int = 10) throws {
        let isV6 = host.contains(":")
        fd = socket(isV6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw InitiatorError.system("socket", errno) }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let rc: Int32
        if isV6 {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = port.bigEndian
            inet_pton(AF_INET6, host, &sa.sin6_addr)
            rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        } else {
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &sa.sin_addr)
            rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        var e = rc == 0 ? 0 : errno
        if rc != 0 && (e == EINTR || e == EINPROGRESS) {
            // A signal interrupted connect(2); the connection still completes in the
            // background: wait for it and read its outcome.
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            while poll(&pfd, 1, Int32(timeoutSeconds * 1000)) < 0 && errno == EINTR {}
            var soError: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soError, &len)
            e = pfd.revents & Int16(POLLOUT) != 0 ? soError : ETIMEDOUT
        }
        guard e == 0 else {
            Glibc.close(fd)
            throw InitiatorError.system("connect to \(host):\(port)", e)
        }
    }

    deinit { Glibc.close(fd) }

    /// Test aid: when set, `send` cuts what it sends into pieces of these sizes in turn (the
    /// list cycles across sends), each sent on its own after a pause, so the target receives
    /// PDUs cut at any offset: headers, payloads and digests split over several reads.
    public var fragmentation: (sizes: [Int], pauseMicroseconds: UInt32)? {
        didSet { fragmentIndex = 0 }
    }
    private var fragmentIndex = 0

    public func send(_ bytes: [UInt8]) throws {
        var sent = 0
        try bytes.withUnsafeBytes { buf in
            while sent < buf.count {
                var piece = buf.count - sent
                if let f = fragmentation, !f.sizes.isEmpty {
                    piece = min(piece, max(1, f.sizes[fragmentIndex % f.sizes.count]))
                    fragmentIndex += 1
                    if f.pauseMicroseconds > 0 { usleep(f.pauseMicroseconds) }
                }
                let n = Glibc.send(fd, buf.baseAddress! + sent, piece, Int32(MSG_NOSIGNAL))
                if n < 0 {
                    if errno == EINTR { continue }
                    throw InitiatorError.system("send", errno)
                }
                sent += n
            }
        }
    }

    /// Reads exactly `count` bytes; throws `.closed` if the target closed first.
    public func receive(_ count: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var got = 0
        try out.withUnsafeMutableBytes { buf in
            while got < count {
                let n = recv(fd, buf.baseAddress! + got, count - got, 0)
                if n == 0 { throw InitiatorError.closed }
                if n < 0 {
                    if errno == EINTR { continue }
                    if errno == EAGAIN || errno == EWOULDBLOCK { throw InitiatorError.timeout }
                    throw InitiatorError.system("recv", errno)
                }
                got += n
            }
        }
        return out
    }

    /// True once the peer has closed (reads EOF, discarding any data before it), waiting up
    /// to `seconds`.
    public func waitForClose(seconds: Int) -> Bool {
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        var buffer = [UInt8](repeating: 0, count: 4096)
        var waited = 0
        while waited < seconds * 1000 {
            if poll(&pfd, 1, 100) > 0 {
                let n = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
                if n == 0 { return true }
                if n < 0 && errno != EAGAIN { return true }
                if n > 0 { continue }
            }
            waited += 100
        }
        return false
    }

    public func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }
}

public enum InitiatorError: Error, Equatable, CustomStringConvertible {
    case system(String, Int32)
    case closed
    case timeout
    case protocolError(String)
    case terminated(status: UInt16, information: UInt32)
    case commandFailed(String)

    public var description: String {
        switch self {
        case let .system(what, e): return "\(what): \(String(cString: strerror(e)))"
        case .closed: return "the target closed the connection"
        case .timeout: return "timed out waiting for the target"
        case let .protocolError(s): return "protocol error: \(s)"
        case let .terminated(s, i): return "target sent C2HTermReq (FES \(s), FEI \(i))"
        case let .commandFailed(s): return s
        }
    }
}
