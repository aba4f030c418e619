import CLiburing
import FathomTarget
import NVMeWire
#if canImport(Glibc)
import Glibc
#endif

/// The receive state machine: every field from the wire is checked before it is used.
extension Connection {
    /// Posts the next recv: straight into a command buffer when a payload is pending and
    /// nothing of it is staged, otherwise the multishot recv (ConnectionMultishot.swift) or,
    /// without a buffer ring, a recv into the staging buffer.
    func postRecv() {
        guard !recvInFlight, !stopReading, state != .closing else { return }
        let sqe: UnsafeMutablePointer<io_uring_sqe>
        if phase == .payload && rxStart == rxEnd, let dest = payloadDest {
            sqe = submissions.sqe(userData(.recv, slot: Self.singleRecvTag))
            io_uring_prep_recv(sqe, socketRef, dest, payloadRemaining, 0)
            recvDirect = true
        } else if receiveRing != nil && quietCapsules >= Self.quietCapsulesForMultishot {
            return armMultishot()
        } else {
            compactStaging(room: 1024)
            sqe = submissions.sqe(userData(.recv, slot: Self.singleRecvTag))
            io_uring_prep_recv(sqe, socketRef, staging + rxEnd, Self.stagingCapacity - rxEnd, 0)
            recvDirect = false
        }
        markSocket(sqe)
        recvInFlight = true
        inflight += 1
    }

    /// Makes room for at least `room` bytes after `rxEnd` in the staging buffer: rewinds it
    /// when empty, else moves the unparsed bytes to its start once the room left is smaller.
    func compactStaging(room: Int) {
        if rxStart == rxEnd {
            rxStart = 0
            rxEnd = 0
        } else if Self.stagingCapacity - rxEnd < room {
            memmove(staging, staging + rxStart, rxEnd - rxStart)
            rxEnd -= rxStart
            rxStart = 0
        }
    }

    /// A recv-side completion: `tag` (the user data's slot field) tells a single recv from
    /// the multishot recv and from the cancellation of one.
    func recvCompleted(_ result: Int32, flags: UInt32, tag: Int) {
        if tag & Self.multishotTagBit != 0 { return multishotCompleted(result, flags: flags) }
        if tag == Self.cancelTag { return cancelCompleted() }
        recvInFlight = false
        inflight -= 1
        if state == .closing { return finishIfIdle() }
        guard result > 0 else {
            close(result == 0 ? "host closed the connection" : "recv failed: \(String(cString: strerror(-result)))")
            return
        }
        let n = Int(result)
        if recvDirect {
            payloadDest! += n
            payloadRemaining -= n
            if payloadRemaining == 0 { payloadReceived() }
        } else {
            rxEnd += n
        }
        processInput()
        if state != .closing { postRecv() }
    }

    /// Consumes the bytes `input[rxStart..<rxEnd]` (the staging buffer, or a provided buffer
    /// parsed in place): headers, payload bytes, digests, as far as they go.
    func processInput() {
        while !stopReading && state != .closing {
            let available = rxEnd - rxStart
            switch phase {
            case .payload:
                guard available > 0 else { return }
                let n = min(available, payloadRemaining)
                payloadDest!.copyMemory(from: input + rxStart, byteCount: n)
                rxStart += n
                payloadDest! += n
                payloadRemaining -= n
                if payloadRemaining == 0 { payloadReceived() }
            case .dataDigest:
                guard available >= 4 else { return }
                let sent = UnsafeRawPointer(input + rxStart).le32(0)
                rxStart += 4
                let computed = CRC32C.checksum(payloadStart!, payloadLength)
                guard sent == computed else {
                    // Corrupted data on the wire: like nvmet and the Linux host we end the
                    // connection rather than trust anything else on it. The transport defines
                    // no FES for data digests, so the nearest (digest error) is reported.
                    fatal(TransportFault(.headerDigestError, "data digest mismatch (got \(hex(sent)), computed \(hex(computed)))"),
                          header: nil, headerLength: 0)
                    return
                }
                phase = .header
                payloadComplete()
            case .header:
                guard available >= PDUHeader.size else { return }
                let p = UnsafeRawPointer(input + rxStart)
                if !parseHeader(p, available: available) { return }
                lastPDUProgressMs = reactor.nowMs
            }
        }
    }

    /// Parses one PDU header at `p`. Returns false when more bytes are needed or the
    /// connection is failing.
    private func parseHeader(_ p: UnsafeRawPointer, available: Int) -> Bool {
        let ch = PDUHeader(decoding: p)
        guard let type = ch.type else {
            fatal(TransportFault(.invalidHeaderField, field: 0, "unknown PDU type \(ch.rawType)"), header: p, headerLength: 8)
            return false
        }
        let hlen = Int(ch.headerLength)
        let plen = Int(ch.length)
        switch (state, type) {
        case (.awaitingICReq, .icReq), (.active, .capsuleCommand), (.active, .h2cData), (_, .h2cTermReq): break
        default:
            fatal(TransportFault(.pduSequenceError, "unexpected \(type) PDU"), header: p, headerLength: min(hlen, available, 128))
            return false
        }
        guard hlen == type.headerLength else {
            fatal(TransportFault(.invalidHeaderField, field: 2, "\(type) hlen \(hlen)"), header: p, headerLength: 8)
            return false
        }
        if type == .h2cTermReq {
            guard plen >= hlen, plen <= hlen + 152 else {
                fatal(TransportFault(.invalidHeaderField, field: 4, "H2CTermReq plen \(plen)"), header: p, headerLength: 8)
                return false
            }
            guard available >= hlen else { return false }
            let term = TerminationRequest.decode(p)
            logger.warning("host terminated the connection", metadata: ["peer": "\(peer)", "fes": "\(term.status)", "fei": "\(term.errorInformation)"])
            close("host sent H2CTermReq (FES \(term.status))")
            return false
        }
        if type == .icReq {
            guard available >= 128 else { return false }
            do {
                let req = try ICRequest.decode(p)
                handleICReq(req)
                rxStart += 128
            } catch {
                fatal(error, header: p, headerLength: 128)
                return false
            }
            return true
        }
        // Capsule commands and H2CData carry a header digest when negotiated.
        let hd = digests.headerDigestLength
        let headerTotal = hlen + hd
        if digests.header != (ch.flags & PDUFlags.headerDigest != 0) {
            fatal(TransportFault(.invalidHeaderField, field: 1, "HDGSTF flag does not match the negotiated header digest"), header: p, headerLength: hlen)
            return false
        }
        guard plen >= headerTotal else {
            fatal(TransportFault(.invalidHeaderField, field: 4, "plen \(plen) shorter than the header"), header: p, headerLength: 8)
            return false
        }
        guard available >= headerTotal else { return false }
        if digests.header {
            let sent = p.le32(hlen)
            let computed = CRC32C.checksum(p, hlen)
            guard sent == computed else {
                fatal(TransportFault(.headerDigestError, "header digest mismatch"), header: p, headerLength: hlen)
                return false
            }
        }
        // Data, if any, follows the header (CPDA 0): PDO is exactly header + digest.
        var dataLength = 0
        if plen > headerTotal {
            guard Int(ch.dataOffset) == headerTotal else {
                fatal(TransportFault(.invalidHeaderField, field: 3, "PDO \(ch.dataOffset), expected \(headerTotal)"), header: p, headerLength: hlen)
                return false
            }
            if digests.data != (ch.flags & PDUFlags.dataDigest != 0) {
                fatal(TransportFault(.invalidHeaderField, field: 1, "DDGSTF flag does not match the negotiated data digest"), header: p, headerLength: hlen)
                return false
            }
            dataLength = plen - headerTotal - digests.dataDigestLength
            guard dataLength > 0 else {
                fatal(TransportFault(.invalidHeaderField, field: 4, "plen \(plen) leaves no room for data"), header: p, headerLength: hlen)
                return false
            }
        } else if ch.dataOffset != 0 {
            fatal(TransportFault(.invalidHeaderField, field: 3, "PDO \(ch.dataOffset) without data"), header: p, headerLength: hlen)
            return false
        }
        if type == .capsuleCommand {
            return receiveCapsule(p, dataLength: dataLength, headerTotal: headerTotal)
        }
        return receiveH2CData(p, flags: ch.flags, dataLength: dataLength, plen: plen, headerTotal: headerTotal)
    }

    private func receiveCapsule(_ p: UnsafeRawPointer, dataLength: Int, headerTotal: Int) -> Bool {
        guard dataLength <= ioInCapsuleLimit else {
            fatal(TransportFault(.dataTransferLimitExceeded, "\(dataLength) bytes in-capsule, limit \(ioInCapsuleLimit)"), header: p, headerLength: 72)
            return false
        }
        guard let i = slots.take() else {
            fatal(TransportFault(.pduSequenceError, "more commands outstanding than the queue holds"), header: p, headerLength: 72)
            return false
        }
        let s = slots[i]
        s.pointee.sqe = SubmissionQueueEntry(decoding: p + PDUHeader.size)
        s.pointee.state = .executing
        rxStart += headerTotal
        if dataLength > Self.smallPayloadBytes {
            noteDataTraffic()
        } else if quietCapsules < Self.quietCapsulesForMultishot {
            quietCapsules += 1
        }
        if dataLength > 0 {
            attachBuffer(i, length: dataLength)
            s.pointee.inCapsuleLength = dataLength
            beginPayload(slot: i, kind: .capsule, dest: s.pointee.buffer!, length: dataLength)
        } else {
            startCommand(i)
        }
        return true
    }

    private func receiveH2CData(_ p: UnsafeRawPointer, flags: UInt8, dataLength: Int, plen: Int, headerTotal: Int) -> Bool {
        let h = DataTransferHeader(decoding: p)
        let i = Int(h.transferTag)
        guard i < slots.count, slots[i].pointee.state == .receivingData, slots[i].pointee.sqe.commandID == h.commandID else {
            fatal(TransportFault(.invalidHeaderField, field: 10, "H2CData for no outstanding R2T (cid \(h.commandID), ttag \(h.transferTag))"),
                  header: p, headerLength: 24)
            return false
        }
        let s = slots[i]
        guard Int(h.length) == dataLength, dataLength <= reactor.settings.maxH2CData else {
            fatal(TransportFault(.invalidHeaderField, field: 16, "DATAL \(h.length) (PDU carries \(dataLength), MAXH2CDATA \(reactor.settings.maxH2CData))"),
                  header: p, headerLength: 24)
            return false
        }
        guard Int(h.offset) == s.pointee.received, Int(h.offset) + dataLength <= s.pointee.dataLength else {
            fatal(TransportFault(.dataTransferOutOfRange, field: 12, "DATAO \(h.offset) + \(dataLength) outside the expected \(s.pointee.received)..<\(s.pointee.dataLength)"),
                  header: p, headerLength: 24)
            return false
        }
        let last = Int(h.offset) + dataLength == s.pointee.dataLength
        guard last == (flags & PDUFlags.lastPDU != 0) else {
            fatal(TransportFault(.invalidHeaderField, field: 1, "LAST_PDU flag does not match the end of the transfer"), header: p, headerLength: 24)
            return false
        }
        rxStart += headerTotal
        beginPayload(slot: i, kind: .h2cData, dest: s.pointee.data! + Int(h.offset), length: dataLength)
        return true
    }

    private func beginPayload(slot: Int, kind: PayloadKind, dest: UnsafeMutableRawPointer, length: Int) {
        phase = .payload
        payloadSlot = slot
        payloadKind = kind
        payloadStart = dest
        payloadDest = dest
        payloadLength = length
        payloadRemaining = length
    }

    /// All payload bytes are in; the digest (if any) is next.
    func payloadReceived() {
        if digests.data {
            phase = .dataDigest
        } else {
            phase = .header
            payloadComplete()
        }
    }

    /// True when part of a PDU has been waiting for the rest longer than `timeoutMs`: a host
    /// trickling a header or payload (slowloris) must not hold the connection's buffers.
    func pduOverdue(nowMs: Int64, timeoutMs: Int64) -> Bool {
        let partial = phase != .header || rxEnd > rxStart
        return partial && nowMs - lastPDUProgressMs > timeoutMs
    }

    private func payloadComplete() {
        lastPDUProgressMs = reactor.nowMs
        let i = payloadSlot
        payloadDest = nil
        switch payloadKind {
        case .capsule:
            startCommand(i)
        case .h2cData:
            let s = slots[i]
            s.pointee.received += payloadLength
            if s.pointee.received == s.pointee.dataLength {
                s.pointee.state = .executing
                execute(i)
            }
        }
    }

    private func handleICReq(_ req: ICRequest) {
        digests = DigestConfig(header: req.headerDigest, data: req.dataDigest)
        state = .active
        ICResponse(headerDigest: req.headerDigest, dataDigest: req.dataDigest, maxH2CData: UInt32(reactor.settings.maxH2CData))
            .encode(into: control)
        controlLength = 128
        enqueue(Self.controlItem)
    }
}

@inline(__always)
func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }
