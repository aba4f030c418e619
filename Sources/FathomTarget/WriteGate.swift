import Synchronization

/// Makes a fused Compare and Write atomic with respect to every other write to the
/// namespace, from any host on any reactor.
///
/// Every write-class command enters the gate before it reaches the backend and leaves when
/// the backend is done; that is two atomic adds, no lock. A fused operation closes the gate
/// (new writes wait), is told once the writes already in flight have drained, runs its
/// compare and write alone, and opens the gate again. Enter increments before it checks
/// and close sets before it checks (sequentially consistent), so no write can slip past a
/// closing gate unseen. The whole namespace is held, not just the LBA range: fused commands
/// are rare (VMware ATS and similar), and this keeps the common write path to two adds.
public final class WriteGate {
    private let inFlight = Atomic<Int>(0)
    private let closed = Atomic<Bool>(false)
    private let onDrained = Mutex<(() -> Void)?>(nil)

    public init() {}

    /// Called before a write-class command starts. False: the gate is closed, retry the
    /// command after `open` (the caller is woken).
    @inline(__always)
    public func enter() -> Bool {
        inFlight.wrappingAdd(1, ordering: .sequentiallyConsistent)
        if closed.load(ordering: .sequentiallyConsistent) {
            leave()
            return false
        }
        return true
    }

    /// Called once a write that entered is finished with the backend.
    @inline(__always)
    public func leave() {
        let left = inFlight.wrappingSubtract(1, ordering: .sequentiallyConsistent).newValue
        if left == 0 && closed.load(ordering: .sequentiallyConsistent) { fireDrained() }
    }

    /// Closes the gate for one exclusive operation. `drained` runs exactly once, on any
    /// thread, when no write is in flight. False when another exclusive operation holds it.
    public func close(drained: @escaping () -> Void) -> Bool {
        guard closed.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged else {
            return false
        }
        onDrained.withLock { $0 = drained }
        if inFlight.load(ordering: .sequentiallyConsistent) == 0 { fireDrained() }
        return true
    }

    /// Ends the exclusive operation.
    public func open() {
        onDrained.withLock { $0 = nil }
        closed.store(false, ordering: .sequentiallyConsistent)
    }

    public var isClosed: Bool { closed.load(ordering: .sequentiallyConsistent) }

    private func fireDrained() {
        let f = onDrained.withLock { f -> (() -> Void)? in
            let taken = f
            f = nil
            return taken
        }
        f?()
    }
}
