import CLiburing
import FathomTarget
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A listening TCP socket and the port (nvmetcli "port") it serves.
final class Listener {
    let fd: Int32
    /// What the socket serves; its ID, subsystems and parameters change with the configuration.
    var port: Port
    /// Names this listener in io_uring user data (16 bits; unique among the live ones).
    let token: Int
    private static let nextToken = Atomic<Int>(0)
    /// The TCP port actually bound (differs from the configured one when that was 0).
    let boundPort: UInt16
    private var closed = false

    init(port: Port, address: String, tcpPort: UInt16) throws {
        let family = port.isIPv6 ? AF_INET6 : AF_INET
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ListenError(address: address, port: tcpPort, errno: errno, action: "socket") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound: Int32
        if port.isIPv6 {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = tcpPort.bigEndian
            guard inet_pton(AF_INET6, address, &sa.sin6_addr) == 1 else {
                Glibc.close(fd)
                throw ListenError(address: address, port: tcpPort, errno: EINVAL, action: "parse address")
            }
            bound = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        } else {
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = tcpPort.bigEndian
            guard inet_pton(AF_INET, address, &sa.sin_addr) == 1 else {
                Glibc.close(fd)
                throw ListenError(address: address, port: tcpPort, errno: EINVAL, action: "parse address")
            }
            bound = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        }
        guard bound == 0 else {
            let e = errno
            Glibc.close(fd)
            throw ListenError(address: address, port: tcpPort, errno: e, action: "bind")
        }
        guard listen(fd, 512) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw ListenError(address: address, port: tcpPort, errno: e, action: "listen on")
        }
        self.fd = fd
        self.token = Self.nextToken.add(1, ordering: .relaxed).newValue & 0xFFFF
        self.boundPort = SocketAddress.port(of: fd, local: true)
        var p = port
        p.serviceID = String(boundPort)
        self.port = p
    }

    /// Shutting the socket down completes a pending io_uring accept, which closing alone
    /// would not.
    func close() {
        guard !closed else { return }
        closed = true
        shutdown(fd, Int32(SHUT_RDWR))
        Glibc.close(fd)
    }
}

public struct ListenError: Error, CustomStringConvertible {
    public var address: String
    public var port: UInt16
    public var errno: Int32
    public var action: String
    public var description: String {
        var hint = ""
        if errno == EADDRINUSE { hint = " (another target, nvmet or a previous fathomd, already listens there)" }
        if errno == EADDRNOTAVAIL { hint = " (no interface of this machine has that address)" }
        if errno == EACCES { hint = " (ports below 1024 need root or CAP_NET_BIND_SERVICE)" }
        return "cannot \(action) \(address):\(port): \(String(cString: strerror(errno)))\(hint)"
    }
}

/// Text forms of a socket's addresses.
enum SocketAddress {
    static func peer(of fd: Int32) -> String { describe(fd, local: false, withPort: true) }
    static func local(of fd: Int32) -> String { describe(fd, local: true, withPort: false) }

    static func port(of fd: Int32, local: Bool) -> UInt16 {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { local ? getsockname(fd, $0, &len) : getpeername(fd, $0, &len) }
        }
        guard rc == 0 else { return 0 }
        let family = storage.ss_family
        return withUnsafePointer(to: &storage) { p -> UInt16 in
            if family == sa_family_t(AF_INET6) {
                return p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
            }
            return p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
    }

    private static func describe(_ fd: Int32, local: Bool, withPort: Bool) -> String {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { local ? getsockname(fd, $0, &len) : getpeername(fd, $0, &len) }
        }
        guard rc == 0 else { return "?" }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        var port: UInt16 = 0
        var v6 = false
        let family = storage.ss_family
        withUnsafePointer(to: &storage) { p in
            if family == sa_family_t(AF_INET6) {
                v6 = true
                p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    var a = $0.pointee.sin6_addr
                    inet_ntop(AF_INET6, &a, &text, socklen_t(text.count))
                    port = UInt16(bigEndian: $0.pointee.sin6_port)
                }
            } else {
                p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    var a = $0.pointee.sin_addr
                    inet_ntop(AF_INET, &a, &text, socklen_t(text.count))
                    port = UInt16(bigEndian: $0.pointee.sin_port)
                }
            }
        }
        let address = String(cString: text)
        guard withPort else { return address }
        return v6 ? "[\(address)]:\(port)" : "\(address):\(port)"
    }
}
