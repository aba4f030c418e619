import CNVMeTypes
import NVMeWire

/// Reservation Register, Acquire, Release and Report (NVMe Base, "Reservations"), and the
/// notifications they send to other hosts.
extension Controller {
    /// Reservation Conflict for an I/O command of this controller's host, or nil.
    @inline(__always)
    public func reservationConflict(_ request: BlockRequest, on ns: Namespace) -> NVMeStatus? {
        guard request.operation != .reservation, ns.reservations.isEngaged else { return nil }
        return ns.reservations.conflict(host: hostIdentifier, write: request.isWriteClass)
    }

    /// Executes a reservation command whose data is in `data` (or, for Report, goes there).
    public func executeReservation(_ sqe: SubmissionQueueEntry, namespace ns: Namespace, data: UnsafeMutableRawBufferPointer,
                                   target: Target) -> CommandCompletion {
        // Register and Acquire carry two keys, Release one; Report only writes its buffer.
        let need = sqe.opcode == IOCommand.reservationReport ? 0 : (sqe.opcode == IOCommand.reservationRelease ? 8 : 16)
        guard let p = data.baseAddress, data.count >= need else { return .failure(.dataSGLLengthInvalid) }
        let host = hostIdentifier
        let ignoreKey = sqe.cdw10 & (1 << 3) != 0
        let action = sqe.cdw10 & 0x7
        let crkey = need >= 8 ? UnsafeRawPointer(p).le64(0) : 0
        let status: NVMeStatus
        let notices: [(HostIdentifier, ReservationNotice)]
        switch sqe.opcode {
        case IOCommand.reservationReport:
            return reservationReport(sqe, ns, data)
        case IOCommand.reservationRegister:
            let nrkey = UnsafeRawPointer(p).le64(8)
            let cptpl = sqe.cdw10 >> 30
            guard cptpl != 1, cptpl < 2 || ns.reservations.persistencePath != nil else { return .failure(.invalidField) }
            (status, notices) = ns.reservations.update { s in
                var notices: [(HostIdentifier, ReservationNotice)] = []
                switch action {
                case 0:  // register
                    if let r = s.registrant(host) { return (r.key == nrkey ? .success : .reservationConflict, []) }
                    s.registrants.append(.init(host: host, key: nrkey, controllerID: id))
                case 1:  // unregister
                    guard let r = s.registrant(host), ignoreKey || r.key == crkey else { return (.reservationConflict, []) }
                    let held = s.holds(host)
                    s.registrants.removeAll { $0.host == host }
                    if let t = s.type, held && (!t.allRegistrantsHold || s.registrants.isEmpty) {
                        s.type = nil
                        s.holder = nil
                        if t.registrantsOnly { notices = s.registrants.map { ($0.host, .reservationReleased) } }
                    }
                case 2:  // replace
                    if let k = s.registrants.firstIndex(where: { $0.host == host }) {
                        guard ignoreKey || s.registrants[k].key == crkey else { return (.reservationConflict, []) }
                        s.registrants[k].key = nrkey
                    } else {
                        guard ignoreKey || crkey == 0 else { return (.reservationConflict, []) }
                        s.registrants.append(.init(host: host, key: nrkey, controllerID: id))
                    }
                default:
                    return (.invalidField, [])
                }
                if cptpl >= 2 { s.persistThroughPowerLoss = cptpl == 3 }
                return (.success, notices)
            }
        case IOCommand.reservationAcquire:
            guard let type = ReservationType(rawValue: UInt8(truncatingIfNeeded: sqe.cdw10 >> 8)) else { return .failure(.invalidField) }
            let prkey = UnsafeRawPointer(p).le64(8)
            (status, notices) = ns.reservations.update { s in
                guard let me = s.registrant(host), ignoreKey || me.key == crkey else { return (.reservationConflict, []) }
                switch action {
                case 0:  // acquire
                    if s.type == nil {
                        s.type = type
                        s.holder = host
                        return (.success, [])
                    }
                    return (s.holds(host) && s.type == type ? .success : .reservationConflict, [])
                case 1, 2:  // preempt, preempt and abort (commands here complete as they run: nothing to abort)
                    func preempt(_ matches: (ReservationState.Registrant) -> Bool) -> [(HostIdentifier, ReservationNotice)] {
                        let gone = s.registrants.filter { $0.host != host && matches($0) }
                        s.registrants.removeAll { $0.host != host && matches($0) }
                        return gone.map { ($0.host, .registrationPreempted) }
                    }
                    guard let current = s.type else {
                        guard prkey != 0 else { return (.invalidField, []) }
                        return (.success, preempt { $0.key == prkey })
                    }
                    if current.allRegistrantsHold {
                        if prkey == 0 {
                            let n = preempt { _ in true }
                            s.type = type
                            s.holder = host
                            return (.success, n)
                        }
                        return (.success, preempt { $0.key == prkey })
                    }
                    let holderKey = s.holder.flatMap { s.registrant($0) }?.key
                    if prkey == holderKey {
                        let n = preempt { $0.key == prkey }
                        s.type = type
                        s.holder = host
                        return (.success, n)
                    }
                    guard prkey != 0 else { return (.invalidField, []) }
                    return (.success, preempt { $0.key == prkey })
                default:
                    return (.invalidField, [])
                }
            }
        case IOCommand.reservationRelease:
            let rtype = UInt8(truncatingIfNeeded: sqe.cdw10 >> 8)
            (status, notices) = ns.reservations.update { s in
                guard let me = s.registrant(host), ignoreKey || me.key == crkey else { return (.reservationConflict, []) }
                switch action {
                case 0:  // release
                    guard let t = s.type, s.holds(host) else { return (.success, []) }
                    guard t.rawValue == rtype else { return (.invalidField, []) }
                    s.type = nil
                    s.holder = nil
                    let others = s.registrants.filter { $0.host != host }
                    return (.success, t.registrantsOnly ? others.map { ($0.host, .reservationReleased) } : [])
                case 1:  // clear
                    let others = s.registrants.filter { $0.host != host }
                    s.registrants.removeAll()
                    s.type = nil
                    s.holder = nil
                    return (.success, others.map { ($0.host, .reservationPreempted) })
                default:
                    return (.invalidField, [])
                }
            }
        default:
            return .failure(.invalidOpcode)
        }
        if !notices.isEmpty { target.reservationNotices(in: subsystem, nsid: ns.nsid, notices) }
        return CommandCompletion(status: status)
    }

    /// Reservation Report. Only the extended data structure (EDS) is offered: host
    /// identifiers are 128 bits on fabrics, so the 64-bit form gets Host Identifier
    /// Inconsistent Format, as the specification requires.
    private func reservationReport(_ sqe: SubmissionQueueEntry, _ ns: Namespace, _ data: UnsafeMutableRawBufferPointer) -> CommandCompletion {
        guard sqe.cdw11 & 1 != 0 else { return .failure(.hostIdentifierInconsistentFormat) }
        let s = ns.reservations.state.withLock { $0 }
        var out = [UInt8](repeating: 0, count: 64 + 64 * s.registrants.count)
        out.withUnsafeMutableBytes { b in
            let p = b.baseAddress!
            p.put32(s.generation, 0)
            p.put8(s.type?.rawValue ?? 0, 4)
            p.put16(UInt16(s.registrants.count), 5)
            p.put8(s.persistThroughPowerLoss ? 1 : 0, 9)
            for (k, r) in s.registrants.enumerated() {
                let e = p + 64 + 64 * k
                e.put16(r.controllerID, 0)
                e.put8(s.holds(r.host) ? 1 : 0, 2)
                e.put64(r.key, 8)
                r.host.bytes.withUnsafeBytes { (e + 16).copyMemory(from: $0.baseAddress!, byteCount: 16) }
            }
        }
        return respond(out, into: data)
    }

    /// Queues a reservation notification for this controller and, unless the host masked
    /// that kind for the namespace, sends a "reservation log page available" event.
    func postReservationNotice(nsid: UInt32, _ notice: ReservationNotice) {
        guard let route = eventRouteNow else { return }
        route.run { [self] in
            let mask = reservationMasks[nsid] ?? reservationMasks[0xFFFF_FFFF] ?? 0
            guard mask & (1 << UInt32(notice.rawValue)) == 0 else { return }
            reservationLogCount &+= 1
            if reservationLog.count >= 255 { reservationLog.removeFirst() }
            reservationLog.append((reservationLogCount, notice, nsid))
            guard !reservationNoticeMasked else { return }
            reservationNoticeMasked = true
            // Type 6 (I/O command specific), information 00h (reservation log page available), log 80h.
            if let (cid, dw0) = postAsyncEvent(0x0080_0006) { route.complete(cid, dw0) }
        }
    }

    /// Reservation Notification log (80h): the oldest notification, then it is gone.
    func reservationNotificationPage(retain: Bool) -> [UInt8] {
        var log = nvme_resv_notification_log()
        if let first = reservationLog.first {
            log.lpc = first.count.littleEndian
            log.rnlpt = first.notice.rawValue
            log.nalp = UInt8(min(reservationLog.count - 1, 255))
            log.nsid = first.nsid.littleEndian
            if !retain { reservationLog.removeFirst() }
        }
        if !retain && reservationLog.isEmpty { reservationNoticeMasked = false }
        return withUnsafeBytes(of: &log) { Array($0) }
    }
}

extension Target {
    /// Delivers reservation notifications to every controller of the named hosts.
    public func reservationNotices(in subsystem: Subsystem, nsid: UInt32, _ notices: [(HostIdentifier, ReservationNotice)]) {
        let controllers = liveControllers.filter { $0.subsystem === subsystem }
        for (host, notice) in notices {
            for c in controllers where c.hostIdentifier == host { c.postReservationNotice(nsid: nsid, notice) }
        }
    }
}
