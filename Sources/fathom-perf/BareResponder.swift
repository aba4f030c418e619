import CLiburing
import NVMeWire
#if canImport(Glibc)
import Glibc
#endif

/// The transport's limit on this machine: an io_uring TCP server that answers NVMe/TCP
/// framing with the same sizes Fathom would (ICResp; for a Read capsule a C2HData PDU of
/// the SGL length plus a CapsuleResp; for anything else a CapsuleResp) but does no NVMe
/// work at all: no validation, no slots, no storage. One thread, one ring, one SENDMSG
/// per batch with the data from one shared buffer, like Fathom's reactor.
///
/// It exists only to be measured against: the ratio Fathom / bare responder is the cost
/// of being an NVMe target on top of moving the bytes.
final class BareResponder {
    final class Conn {
        let fd: Int32
        let rx = UnsafeMutableRawPointer.allocate(byteCount: 1 << 20, alignment: 64)
        var filled = 0
        var headers: UnsafeMutableRawPointer
        var headerCapacity = 4096
        var iov: UnsafeMutablePointer<iovec>
        var iovCapacity = 1024
        var iovCount = 0
        var iovStart = 0
        var msg = UnsafeMutablePointer<msghdr>.allocate(capacity: 1)
        var sending = false
        /// Next header slot, round robin: headers leave in order and the host bounds how many
        /// are outstanding (two per command at most), far below `headerCapacity`.
        var nextHeader = 0
        init(fd: Int32) {
            self.fd = fd
            headers = .allocate(byteCount: headerCapacity * 128, alignment: 64)
            iov = .allocate(capacity: iovCapacity)
            msg.initialize(to: msghdr())
        }
    }

    let listenFD: Int32
    /// Behind a pointer: liburing takes it inout from nested calls, which Swift's
    /// exclusivity checking would reject for a stored property.
    private let ring = UnsafeMutablePointer<io_uring>.allocate(capacity: 1)
    private var conns: [Int32: Conn] = [:]
    private let data: UnsafeMutableRawPointer
    private let maxData = 4 << 20

    init(port: UInt16) throws {
        let listenFD = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.listenFD = listenFD
        var one: Int32 = 1
        setsockopt(listenFD, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listenFD, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0, listen(listenFD, 64) == 0 else {
            data = .allocate(byteCount: 1, alignment: 1)
            throw PerfError("cannot listen on 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        data = .allocate(byteCount: maxData, alignment: 4096)
        data.initializeMemory(as: UInt8.self, repeating: 0xA5, count: maxData)
    }

    private func sqe(_ ud: UInt64) -> UnsafeMutablePointer<io_uring_sqe> {
        var s = io_uring_get_sqe(ring)
        while s == nil {
            io_uring_submit(ring)
            s = io_uring_get_sqe(ring)
        }
        io_uring_sqe_set_data64(s!, ud)
        return s!
    }

    // user_data: fd << 8 | kind (1 accept, 2 recv, 3 send)
    func run() -> Never {
        ring.initialize(to: io_uring())
        // The ring setup Fathom's reactors use (SINGLE_ISSUER + DEFER_TASKRUN where the kernel
        // has them): the baseline must not pay costs the target does not.
        var params = io_uring_params()
        params.flags = fathom_IORING_SETUP_SINGLE_ISSUER | fathom_IORING_SETUP_DEFER_TASKRUN
        if io_uring_queue_init_params(1024, ring, &params) != 0 {
            guard io_uring_queue_init(1024, ring, 0) == 0 else { fatalError("io_uring_queue_init failed") }
        }
        io_uring_prep_accept(sqe(1), listenFD, nil, nil, 0)
        while true {
            io_uring_submit_and_wait(ring, 1)
            var cqe: UnsafeMutablePointer<io_uring_cqe>? = nil
            while io_uring_peek_cqe(ring, &cqe) == 0, let c = cqe {
                let ud = c.pointee.user_data
                let res = c.pointee.res
                io_uring_cqe_seen(ring, c)
                let fd = Int32(truncatingIfNeeded: ud >> 8)
                switch ud & 0xFF {
                case 1:
                    if res >= 0 {
                        var one: Int32 = 1
                        setsockopt(res, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
                        let conn = Conn(fd: res)
                        conns[res] = conn
                        postRecv(conn)
                    }
                    io_uring_prep_accept(sqe(1), listenFD, nil, nil, 0)
                case 2:
                    guard let conn = conns[fd] else { continue }
                    if res <= 0 {
                        close(fd)
                        conns[fd] = nil
                        continue
                    }
                    conn.filled += Int(res)
                    parse(conn)
                    postRecv(conn)
                case 3:
                    guard let conn = conns[fd] else { continue }
                    sent(conn, Int(res))
                default:
                    break
                }
            }
        }
    }

    private func postRecv(_ c: Conn) {
        io_uring_prep_recv(sqe(UInt64(c.fd) << 8 | 2), c.fd, c.rx + c.filled, (1 << 20) - c.filled, 0)
    }

    private func parse(_ c: Conn) {
        var at = 0
        while c.filled - at >= 8 {
            let p = UnsafeRawPointer(c.rx + at)
            let plen = Int(p.le32(4))
            if plen < 8 || c.filled - at < plen { break }
            if p.le8(0) == PDUType.icReq.rawValue {
                addHeader(c) { h in
                    ICResponse(headerDigest: false, dataDigest: false, maxH2CData: 131072).encode(into: h)
                    return 128
                }
            } else if p.le8(0) == PDUType.capsuleCommand.rawValue {
                let sqe = SubmissionQueueEntry(decoding: p + 8)
                let len = sqe.opcode == 0x02 ? min(Int(sqe.sgl.length), maxData) : 0
                if len > 0 {
                    addHeader(c) { h in
                        DataTransferHeader(commandID: sqe.commandID, offset: 0, length: UInt32(len))
                            .encode(type: .c2hData, flags: PDUFlags.lastPDU, dataOffset: 24, pduLength: 24 + len, into: h)
                        return 24
                    }
                    addIOV(c, data, len)
                }
                addHeader(c) { h in
                    PDUHeader(type: .capsuleResponse, length: 24).encode(into: h)
                    CompletionQueueEntry(commandID: sqe.commandID, status: .success).encode(into: h + 8)
                    return 24
                }
            }
            at += plen
        }
        if at > 0 && at < c.filled { memmove(c.rx, c.rx + at, c.filled - at) }
        c.filled -= at
        if !c.sending { submitSend(c) }
    }

    /// Header bytes live in a per-connection ring of slots (see `nextHeader`).
    private func addHeader(_ c: Conn, _ body: (UnsafeMutableRawPointer) -> Int) {
        let h = c.headers + (c.nextHeader % c.headerCapacity) * 128
        c.nextHeader &+= 1
        addIOV(c, h, body(h))
    }

    private func addIOV(_ c: Conn, _ base: UnsafeMutableRawPointer, _ len: Int) {
        // Sends always start at iovStart and `sent` moves what is left to the front, so the
        // array holds only what is unsent: at most three entries per outstanding command.
        precondition(c.iovCount < c.iovCapacity, "bare responder: more outstanding PDUs than it holds")
        c.iov[c.iovCount] = iovec(iov_base: base, iov_len: len)
        c.iovCount += 1
    }

    private func submitSend(_ c: Conn) {
        guard c.iovStart < c.iovCount else { return }
        c.msg.pointee.msg_iov = c.iov + c.iovStart
        c.msg.pointee.msg_iovlen = c.iovCount - c.iovStart
        io_uring_prep_sendmsg(sqe(UInt64(c.fd) << 8 | 3), c.fd, c.msg, UInt32(MSG_NOSIGNAL))
        c.sending = true
    }

    private func sent(_ c: Conn, _ n: Int) {
        c.sending = false
        guard n > 0 else { return }
        var left = n
        while left > 0 && c.iovStart < c.iovCount {
            if c.iov[c.iovStart].iov_len <= left {
                left -= c.iov[c.iovStart].iov_len
                c.iovStart += 1
            } else {
                c.iov[c.iovStart].iov_base += left
                c.iov[c.iovStart].iov_len -= left
                left = 0
            }
        }
        // Nothing is in flight now: move the unsent entries to the front (a connection that
        // always has more to send would otherwise never get back to the start of the array).
        if c.iovStart > 0 {
            let rest = c.iovCount - c.iovStart
            if rest > 0 { (c.iov).update(from: c.iov + c.iovStart, count: rest) }
            c.iovStart = 0
            c.iovCount = rest
        }
        submitSend(c)
    }
}

struct PerfError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}
