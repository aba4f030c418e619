import CLiburing
import FathomStorage
#if canImport(Glibc)
import Glibc
#endif

/// Threads that run the storage work which may block and is not one ring operation (a clone's
/// copy-up chain and its Flush of overlay and map, `StorageOperation.runsOnWorker`; a
/// reservation change saved through power loss), so that a reactor — and every other host on
/// it — never waits for it. A finished
/// operation's result goes back to its reactor as if its ring had completed it
/// (`Reactor.storageWorkerFinished`).
///
/// Why threads and not the ring: these are chains of dependent system calls over a lock
/// (read the base's chunk, merge, write it, set the bit; `fdatasync` the overlay, then write
/// and sync the map); io_uring's own workers run the same calls one at a time. nvmet's file
/// backend also hands buffered I/O to a workqueue. The pool is shared by every reactor of the
/// process and started on first use (most targets have no clone namespace).
///
/// Fairness: operations queue per key (a clone's backend, which is one host's), in order, and a
/// key has at most one operation running; keys with work take turns, one operation each. A host
/// with a hundred copy-ups queued therefore occupies one thread, not all of them, and another
/// host's Flush starts as soon as any thread is free — with one FIFO for all, it would wait
/// behind every one of them (and threads would sit on the first host's lock). Four threads:
/// four hosts' flushes at once.
final class StorageWorkers: @unchecked Sendable {
    static let shared = StorageWorkers(threads: 4)

    /// One operation to run: `work` returns its result (bytes or -errno). Jobs of one `key`
    /// (a clone's backend, a namespace's reservation state) run one at a time, in order.
    /// `work` holds what it needs alive (a hot-removed namespace's last operations finish);
    /// the memory it reads or writes belongs to the command slot, which stays busy until the
    /// reactor gets the result.
    struct Job {
        var key: ObjectIdentifier
        var work: () -> Int32
        var reactor: Reactor
        var userData: UInt64

        /// A backend operation `prepare` sent to a worker (`BlockBackend.perform`).
        init(_ operation: StorageOperation, on backend: BlockBackend, reactor: Reactor, userData: UInt64) {
            self.init(key: ObjectIdentifier(backend), reactor: reactor, userData: userData) { backend.perform(operation) }
        }

        init(key: ObjectIdentifier, reactor: Reactor, userData: UInt64, work: @escaping () -> Int32) {
            self.key = key
            self.work = work
            self.reactor = reactor
            self.userData = userData
        }
    }

    /// One key's operations, in order. `scheduled` while it waits in `ready` or one of its
    /// operations runs: it is never in `ready` twice, so never runs on two threads.
    private final class Lane {
        var jobs: [Job] = []
        var head = 0
        var scheduled = false
        var isEmpty: Bool { head == jobs.count }

        func pop() -> Job {
            let job = jobs[head]
            head += 1
            if isEmpty {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            }
            return job
        }
    }

    private let threadCount: Int
    /// Guards everything below (a pthread mutex: its condition variable is what idle threads
    /// wait on).
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let workAvailable = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var lanes: [ObjectIdentifier: Lane] = [:]
    /// Lanes with an operation to start, oldest first (`readyHead` is the next).
    private var ready: [Lane] = []
    private var readyHead = 0
    /// Threads running; nil until the first job starts them.
    private var running: Int?

    init(threads: Int) {
        threadCount = threads
        pthread_mutex_init(lock, nil)
        pthread_cond_init(workAvailable, nil)
    }

    /// Queues `job` (any thread); its result reaches `job.reactor` later.
    func submit(_ job: Job) {
        pthread_mutex_lock(lock)
        if running == nil { running = (0..<threadCount).reduce(0) { count, _ in count + (spawn() ? 1 : 0) } }
        guard running! > 0 else {
            pthread_mutex_unlock(lock)
            // No thread could be started (a thread limit): run it here rather than never.
            return job.reactor.storageWorkerFinished(userData: job.userData, result: job.work())
        }
        let lane: Lane
        if let l = lanes[job.key] {
            lane = l
        } else {
            lane = Lane()
            lanes[job.key] = lane
        }
        lane.jobs.append(job)
        if !lane.scheduled {
            lane.scheduled = true
            ready.append(lane)
            pthread_cond_signal(workAvailable)
        }
        pthread_mutex_unlock(lock)
    }

    private func run() {
        pthread_mutex_lock(lock)
        while true {
            while readyHead == ready.count { pthread_cond_wait(workAvailable, lock) }
            let lane = ready[readyHead]
            readyHead += 1
            if readyHead == ready.count {
                ready.removeAll(keepingCapacity: true)
                readyHead = 0
            }
            let job = lane.pop()
            pthread_mutex_unlock(lock)
            let result = job.work()
            job.reactor.storageWorkerFinished(userData: job.userData, result: result)
            pthread_mutex_lock(lock)
            if lane.isEmpty {
                lane.scheduled = false
                lanes[job.key] = nil
            } else {
                ready.append(lane)  // to the back: the other backends' turn first
                pthread_cond_signal(workAvailable)
            }
        }
    }

    /// Starts a worker (named `fathom-storage`, as `top -H` shows it); false if it could not.
    private func spawn() -> Bool {
        var thread = pthread_t()
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { arg in
            let workers = Unmanaged<StorageWorkers>.fromOpaque(arg!).takeRetainedValue()
            _ = fathom_name_current_thread("fathom-storage")
            workers.run()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<StorageWorkers>.fromOpaque(context).release()
            return false
        }
        pthread_detach(thread)
        return true
    }
}
