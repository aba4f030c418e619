import FoundationEssentials
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The daemon's control socket: an owner-only AF_UNIX socket served by one thread, one
/// request at a time (every request changes or reads the whole configuration, so there is
/// nothing to gain from concurrency and much to lose). Peers must run as the daemon's user
/// or root (checked with SO_PEERCRED as well as by the file mode).
public final class ControlServer {
    public let path: String
    private let listener: UnixSocket
    private var thread = pthread_t()
    private let handler: (ControlRequest) -> ControlResponse
    private let stopping = Atomic<Bool>(false)

    /// Binds `path` (mode 0600, its directory created 0700 if missing). A stale socket file
    /// left by a crashed daemon is replaced; a live one is an error.
    public init(path: String, handler: @escaping (ControlRequest) -> ControlResponse) throws(ControlError) {
        self.path = path
        self.handler = handler
        let dir = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        if !dir.isEmpty { mkdir(dir, 0o700) }
        if access(path, F_OK) == 0 {
            if (try? UnixSocket.connect(path: path)) != nil {
                throw ControlError("another fathomd already serves the control socket \(path) (use --control-socket to pick another path)")
            }
            unlink(path)
        }
        var sa = try UnixSocket.address(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlError("cannot create the control socket: \(String(cString: strerror(errno)))") }
        listener = UnixSocket(fd: fd)
        let old = umask(0o177)
        let rc = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(old)
        guard rc == 0 else {
            throw ControlError("cannot bind the control socket \(path): \(String(cString: strerror(errno))) (does its directory exist and is it writable?)")
        }
        chmod(path, 0o600)
        guard listen(fd, 16) == 0 else { throw ControlError("cannot listen on \(path): \(String(cString: strerror(errno)))") }
    }

    /// Starts serving on a thread of its own.
    public func start() throws(ControlError) {
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let server = Unmanaged<ControlServer>.fromOpaque(arg!).takeRetainedValue()
            server.serve()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<ControlServer>.fromOpaque(context).release()
            throw ControlError("cannot start the control thread: \(String(cString: strerror(rc)))")
        }
    }

    /// Stops accepting, waits for the request in progress and removes the socket file.
    public func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        shutdown(listener.fd, Int32(SHUT_RDWR))
        pthread_join(thread, nil)
        unlink(path)
    }

    private func serve() {
        while !stopping.load(ordering: .acquiring) {
            let fd = accept(listener.fd, nil, nil)
            if fd < 0 {
                if errno == EINTR || errno == ECONNABORTED { continue }
                if stopping.load(ordering: .acquiring) { return }
                usleep(10_000)
                continue
            }
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let peer = UnixSocket(fd: fd)
            peer.setTimeout(seconds: 10)
            let response: ControlResponse
            if !Self.peerIsTrusted(fd) {
                response = .failure("permission denied: only root or the daemon's user may control it")
            } else if let line = peer.readLine(limit: 1 << 20) {
                do {
                    let request = try JSONDecoder().decode(ControlRequest.self, from: Data(line))
                    response = handler(request)
                } catch {
                    response = .failure("the request is not valid JSON for the control protocol: \(error)")
                }
            } else {
                continue
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            if let body = try? encoder.encode(response) { _ = peer.writeAll([UInt8](body) + [0x0A]) }
        }
    }

    private static func peerIsTrusted(_ fd: Int32) -> Bool {
        // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (Glibc hides it without _GNU_SOURCE).
        var cred: (pid: Int32, uid: UInt32, gid: UInt32) = (0, 0, 0)
        var len = socklen_t(MemoryLayout<(Int32, UInt32, UInt32)>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 else { return false }
        return cred.uid == 0 || cred.uid == getuid()
    }
}
