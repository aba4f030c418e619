import CLiburing
import Dispatch
import FathomStorage
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Threads that run the backend operations which may block and are not one ring operation
/// (`StorageOperation.runsOnWorker`: a clone's copy-up chain, its Flush of overlay and map),
/// so that a reactor — and every other host on it — never waits for them. A finished
/// operation's result goes back to its reactor as if its ring had completed it
/// (`Reactor.storageWorkerFinished`).
///
/// Why threads and not the ring: these are chains of dependent system calls over a lock
/// (read the base's chunk, merge, write it, set the bit; `fdatasync` the overlay, then write
/// and sync the map); io_uring's own workers run the same calls one at a time. nvmet's file
/// backend also hands buffered I/O to a workqueue. The pool is shared by every reactor of the
/// process and started on first use (most targets have no clone namespace); four threads
/// let four hosts' flushes run at once, while one host's operations take turns on its lock.
final class StorageWorkers: @unchecked Sendable {
    static let shared = StorageWorkers(threads: 4)

    /// One operation to run. The backend reference keeps the namespace's storage alive (a
    /// hot-removed namespace's last operations finish); the buffer belongs to the command
    /// slot, which stays busy until the reactor gets the result.
    struct Job {
        var backend: BlockBackend
        var operation: StorageOperation
        var reactor: Reactor
        var userData: UInt64
    }

    private let threadCount: Int
    private let queue = Mutex<(jobs: [Job], head: Int)>(([], 0))
    private let available = DispatchSemaphore(value: 0)
    /// Threads running; nil until the first job starts them.
    private let running = Mutex<Int?>(nil)

    init(threads: Int) { threadCount = threads }

    /// Queues `job` (any thread); its result reaches `job.reactor` later.
    func submit(_ job: Job) {
        let threads = running.withLock { n -> Int in
            if n == nil { n = (0..<threadCount).reduce(0) { count, _ in count + (spawn() ? 1 : 0) } }
            return n!
        }
        guard threads > 0 else {
            // No thread could be started (a thread limit): run it here rather than never.
            return job.reactor.storageWorkerFinished(userData: job.userData, result: job.backend.perform(job.operation))
        }
        queue.withLock { $0.jobs.append(job) }
        available.signal()
    }

    private func next() -> Job {
        available.wait()
        return queue.withLock { q -> Job in
            let job = q.jobs[q.head]
            q.head += 1
            // Compact once the consumed prefix dominates: FIFO without a deque dependency.
            if q.head > 64 && q.head * 2 > q.jobs.count {
                q.jobs.removeFirst(q.head)
                q.head = 0
            }
            return job
        }
    }

    private func run() {
        while true {
            let job = next()
            let result = job.backend.perform(job.operation)
            job.reactor.storageWorkerFinished(userData: job.userData, result: result)
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
