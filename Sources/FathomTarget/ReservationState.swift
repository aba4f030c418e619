import NVMeWire
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// The 128-bit host identifier from Connect: reservations belong to hosts, not controllers.
public struct HostIdentifier: Hashable, Sendable, CustomStringConvertible {
    public var bytes: [UInt8]
    public init(_ bytes: [UInt8]) { self.bytes = Array(bytes.prefix(16)) + [UInt8](repeating: 0, count: max(0, 16 - bytes.count)) }
    public var description: String { UUIDText.format(bytes, dashes: false) }
}

public enum ReservationType: UInt8, Sendable {
    case writeExclusive = 1, exclusiveAccess, writeExclusiveRegistrantsOnly, exclusiveAccessRegistrantsOnly
    case writeExclusiveAllRegistrants, exclusiveAccessAllRegistrants

    var allRegistrantsHold: Bool { self == .writeExclusiveAllRegistrants || self == .exclusiveAccessAllRegistrants }
    var registrantsOnly: Bool { rawValue >= 3 }
    var exclusiveAccess: Bool { self == .exclusiveAccess || self == .exclusiveAccessRegistrantsOnly || self == .exclusiveAccessAllRegistrants }
}

/// Reservation notification kinds (log page 80h).
public enum ReservationNotice: UInt8, Sendable {
    case registrationPreempted = 1, reservationReleased, reservationPreempted
}

/// Registrants and the reservation of one namespace, shared by every controller of the
/// subsystem (on every reactor). The I/O path reads one atomic flag and takes the lock only
/// while a namespace has registrants. With Persist Through Power Loss on, every change is
/// written (fsync + rename) before the command completes, and reloaded at start.
public final class ReservationState {
    struct Registrant: Equatable {
        var host: HostIdentifier
        var key: UInt64
        var controllerID: UInt16
    }

    struct State {
        var generation: UInt32 = 0
        var registrants: [Registrant] = []
        var holder: HostIdentifier? = nil
        var type: ReservationType? = nil
        var persistThroughPowerLoss = false

        func registrant(_ h: HostIdentifier) -> Registrant? { registrants.first { $0.host == h } }
        func holds(_ h: HostIdentifier) -> Bool {
            guard let type else { return false }
            return type.allRegistrantsHold ? registrant(h) != nil : holder == h
        }
    }

    let state = Mutex(State())
    /// Serializes `update`s (held across a save; `state` is not).
    private let updating = Mutex<Void>(())
    private let engaged = Atomic<Bool>(false)
    /// Where PTPL state is kept (nil: persistence unavailable).
    public let persistencePath: String?

    public init(persistencePath: String?) {
        self.persistencePath = persistencePath
        if let path = persistencePath, let loaded = Self.load(path) {
            state.withLock { $0 = loaded }
            engaged.store(!loaded.registrants.isEmpty, ordering: .releasing)
        }
    }

    /// Whether the I/O path must check access at all.
    @inline(__always)
    public var isEngaged: Bool { engaged.load(ordering: .acquiring) }

    /// Reservation Conflict for `host` doing a read (`write` false) or write, or nil.
    public func conflict(host: HostIdentifier, write: Bool) -> NVMeStatus? {
        state.withLock { s -> NVMeStatus? in
            guard let type = s.type, !s.holds(host) else { return nil }
            if !write && !type.exclusiveAccess { return nil }
            if type.registrantsOnly && s.registrant(host) != nil { return nil }
            return .reservationConflict
        }
    }

    /// Applies `body` to the state; saves it if PTPL is on and it changed. Returns the
    /// command's status and the notices to send to other hosts.
    ///
    /// The save (a write, `fsync` and rename) runs outside `state`'s lock, which every
    /// reactor's I/O path takes for a namespace with registrants (`conflict`): their I/O goes
    /// on against the state as it was until the new one is durable and installed. Updates
    /// wait for each other on `updating`, so each computes from the last one installed.
    func update(_ body: (inout State) -> (NVMeStatus, [(HostIdentifier, ReservationNotice)])) -> (NVMeStatus, [(HostIdentifier, ReservationNotice)]) {
        updating.withLock { _ in
            let before = state.withLock { $0 }
            var s = before
            let (status, notices) = body(&s)
            if status.isSuccess && (s.registrants != before.registrants || s.holder != before.holder || s.type != before.type
                                    || s.persistThroughPowerLoss != before.persistThroughPowerLoss) {
                // The generation counts registration changes (register, unregister, replace,
                // preempt, clear), not acquire and release.
                s.generation &+= s.registrants != before.registrants ? 1 : 0
                if let path = persistencePath, s.persistThroughPowerLoss || before.persistThroughPowerLoss {
                    if !Self.save(s, to: path) { return (.internalError, []) }
                }
            }
            let installed = s
            state.withLock { $0 = installed }
            engaged.store(!installed.registrants.isEmpty, ordering: .releasing)
            return (status, notices)
        }
    }

    // MARK: Persistence

    /// Text, one fact per line; written to a temporary file, fsynced and renamed over.
    static func save(_ s: State, to path: String) -> Bool {
        var text = "fathom-reservations 1\nptpl \(s.persistThroughPowerLoss ? 1 : 0)\ngeneration \(s.generation)\n"
        if let t = s.type, let h = s.holder { text += "reservation \(t.rawValue) \(h)\n" } else if let t = s.type { text += "reservation \(t.rawValue) -\n" }
        for r in s.registrants { text += "registrant \(r.host) \(String(r.key, radix: 16)) \(r.controllerID)\n" }
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { return false }
        let bytes = Array(text.utf8)
        let ok = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == bytes.count && fsync(fd) == 0
        close(fd)
        guard ok, rename(tmp, path) == 0 else { return false }
        return true
    }

    static func load(_ path: String) -> State? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            bytes += chunk[0..<n]
        }
        var s = State()
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
            let f = line.split(separator: " ").map(String.init)
            switch f.first {
            case "ptpl": s.persistThroughPowerLoss = f.count > 1 && f[1] == "1"
            case "generation": s.generation = f.count > 1 ? UInt32(f[1]) ?? 0 : 0
            case "reservation" where f.count > 2:
                s.type = UInt8(f[1]).flatMap(ReservationType.init(rawValue:))
                s.holder = f[2] == "-" ? nil : UUIDText.parse(f[2]).map(HostIdentifier.init)
            case "registrant" where f.count > 3:
                if let h = UUIDText.parse(f[1]), let k = UInt64(f[2], radix: 16), let c = UInt16(f[3]) {
                    s.registrants.append(Registrant(host: HostIdentifier(h), key: k, controllerID: c))
                }
            default: continue
            }
        }
        return s.persistThroughPowerLoss ? s : nil
    }
}
