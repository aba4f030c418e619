import NVMeWire
import Synchronization

/// The ANA state of every group (1...128) as seen through one port. Shared by the port
/// and every controller connected through it, so a state change reaches I/O queues at
/// once: the I/O path reads one atomic byte per command (as nvmet reads
/// `port->ana_state[grpid]`). Group 1 exists on every port and starts optimized; a group
/// the port does not configure is inaccessible through it (nvmet's defaults).
public final class ANAStates: Sendable {
    private final class Cell: Sendable {
        let state: Atomic<UInt8>
        init(_ s: ANAState) { state = Atomic(s.rawValue) }
    }
    private let cells: [Cell]
    private let configured: Mutex<[UInt32: ANAState]>

    public init(_ states: [UInt32: ANAState] = [:]) {
        cells = (0...Int(ANALog.maxGroups)).map { $0 == 1 ? Cell(.optimized) : Cell(.inaccessible) }
        configured = Mutex([:])
        update(states)
    }

    /// The state of `group` through this port.
    @inline(__always)
    public func state(_ group: UInt32) -> ANAState {
        guard group >= 1, group <= ANALog.maxGroups else { return .inaccessible }
        return ANAState(rawValue: cells[Int(group)].state.load(ordering: .relaxed)) ?? .inaccessible
    }

    /// The groups configured on this port with their states (group 1 always included).
    public var configuredGroups: [UInt32: ANAState] {
        configured.withLock { c in c.merging([1: state(1)]) { a, _ in a } }
    }

    /// Sets the configured states (groups not listed: group 1 optimized, others
    /// inaccessible). Returns true when any group's state changed.
    @discardableResult
    public func update(_ states: [UInt32: ANAState]) -> Bool {
        configured.withLock { $0 = states }
        var changed = false
        for g in 1...ANALog.maxGroups {
            let next = states[g] ?? (g == 1 ? .optimized : .inaccessible)
            if cells[Int(g)].state.exchange(next.rawValue, ordering: .relaxed) != next.rawValue { changed = true }
        }
        return changed
    }
}
