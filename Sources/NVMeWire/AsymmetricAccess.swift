import CNVMeTypes

/// Asymmetric Namespace Access (ANA): the state of a group of namespaces as seen through
/// one port. Hosts with several paths (ports) to a subsystem use it to pick the path and to
/// fail over (the Linux host's native multipath).
public enum ANAState: UInt8, Sendable, CaseIterable {
    case optimized = 1
    case nonOptimized = 2
    case inaccessible = 3
    case persistentLoss = 4
    case change = 0xF

    /// The names nvmetcli writes in `ana_groups[].ana.state`.
    public init?(name: String) {
        guard let s = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = s
    }

    public var name: String {
        switch self {
        case .optimized: return "optimized"
        case .nonOptimized: return "non-optimized"
        case .inaccessible: return "inaccessible"
        case .persistentLoss: return "persistent-loss"
        case .change: return "change"
        }
    }

    /// The path status an I/O command gets in this state (nil: the path serves I/O).
    /// Path errors are retryable, so the host fails the command over to another path.
    public var ioStatus: NVMeStatus? {
        switch self {
        case .optimized, .nonOptimized: return nil
        case .inaccessible: return .asymmetricAccessInaccessible
        case .persistentLoss: return .asymmetricAccessPersistentLoss
        case .change: return .asymmetricAccessTransition
        }
    }
}

/// One group in the ANA log page.
public struct ANAGroupReport: Equatable, Sendable {
    public var groupID: UInt32
    public var state: ANAState
    public var changeCount: UInt64
    public var namespaceIDs: [UInt32]

    public init(groupID: UInt32, state: ANAState, changeCount: UInt64, namespaceIDs: [UInt32]) {
        self.groupID = groupID
        self.state = state
        self.changeCount = changeCount
        self.namespaceIDs = namespaceIDs
    }
}

/// The ANA log page (LID 0Ch): a 16-byte header, then per group a 32-byte descriptor
/// followed by its NSIDs (none when the host asked for groups only, LSP bit 0).
public enum ANALog {
    public static let maxGroups: UInt32 = 128
    /// ANA Transition Time reported in Identify (seconds), as nvmet.
    public static let transitionTimeSeconds: UInt8 = 10

    public static func encode(changeCount: UInt64, groups: [ANAGroupReport], groupsOnly: Bool) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 16)
        out.withUnsafeMutableBytes { p in
            p.baseAddress!.put64(changeCount, 0)
            p.baseAddress!.put16(UInt16(groups.count), 8)
        }
        for g in groups {
            var d = [UInt8](repeating: 0, count: 32)
            let ids = groupsOnly ? [] : g.namespaceIDs
            d.withUnsafeMutableBytes { p in
                p.baseAddress!.put32(g.groupID, 0)
                p.baseAddress!.put32(UInt32(ids.count), 4)
                p.baseAddress!.put64(g.changeCount, 8)
                p.baseAddress!.put8(g.state.rawValue, 16)
            }
            out += d
            var list = [UInt8](repeating: 0, count: ids.count * 4)
            list.withUnsafeMutableBytes { p in for (i, n) in ids.enumerated() { p.baseAddress!.put32(n, i * 4) } }
            out += list
        }
        return out
    }

    /// Decodes a page (for the initiator and tests).
    public static func decode(_ page: [UInt8]) -> (changeCount: UInt64, groups: [ANAGroupReport])? {
        guard page.count >= 16 else { return nil }
        return page.withUnsafeBytes { b -> (UInt64, [ANAGroupReport])? in
            let p = b.baseAddress!
            let count = Int(p.le16(8))
            var at = 16
            var groups: [ANAGroupReport] = []
            for _ in 0..<count {
                guard at + 32 <= page.count else { return nil }
                let n = Int(p.le32(at + 4))
                guard at + 32 + n * 4 <= page.count, let state = ANAState(rawValue: p.le8(at + 16)) else { return nil }
                groups.append(ANAGroupReport(groupID: p.le32(at), state: state, changeCount: p.le64(at + 8),
                                             namespaceIDs: (0..<n).map { p.le32(at + 32 + $0 * 4) }))
                at += 32 + n * 4
            }
            return (p.le64(0), groups)
        }
    }
}
