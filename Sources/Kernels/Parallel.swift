import Foundation
import Synchronization

/// Threads our own loops (and per-image GEMMs) may use; 1 runs everything on the caller's thread.
nonisolated(unsafe) public private(set) var computeThreads = 1

public func setComputeThreads(_ n: Int) {
    let n = max(1, n)
    guard n != computeThreads else { return }
    computeThreads = n
    pool?.shutDown()
    pool = n > 1 ? WorkerPool(workers: n - 1) : nil
}

/// Calls body(i) for i in 0..<count, split into contiguous chunks over `computeThreads` threads.
/// With one thread (or one item) it is a plain loop: nothing is dispatched or allocated.
@inline(__always)
public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
    parallelChunks(count) { _, range in
        for i in range { body(i) }
    }
}

/// Splits 0..<count into at most `computeThreads` contiguous chunks and calls body(chunk, range)
/// for each, concurrently; `chunk` indexes per-thread scratch. Chunk 0 runs on the caller's thread.
@inline(__always)
public func parallelChunks(_ count: Int, _ body: (_ chunk: Int, _ range: Range<Int>) -> Void) {
    let t = min(computeThreads, count)
    if t <= 1 {
        if count > 0 { body(0, 0..<count) }
        return
    }
    func split(_ chunk: Int) { body(chunk, (chunk * count / t)..<((chunk + 1) * count / t)) }
    if let pool, pool.run(chunks: t, split) { return }
    // The pool is busy (a loop started inside another, or from a second thread): run here.
    for chunk in 0..<t { split(chunk) }
}

nonisolated(unsafe) private var pool: WorkerPool?

/// Worker threads that wait for the next parallel loop by spinning for a short while before they
/// sleep. A training step runs a few hundred loops of a millisecond or less; waking a sleeping
/// thread for each (as DispatchQueue.concurrentPerform does) costs tens of microseconds apiece
/// (docs/kernel-notes.md).
final class WorkerPool: @unchecked Sendable {
    private let workers: Int
    /// Bumped once per loop; a worker runs chunk (its index + 1) of each new generation.
    private let generation = Atomic<Int>(0)
    /// Workers still running the current loop.
    private let remaining = Atomic<Int>(0)
    /// Set while a loop runs, so that a loop started meanwhile runs on its caller instead.
    private let busy = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    // Written before `generation` is bumped (release) and read after it is seen (acquire).
    private var job: ((Int) -> Void)?
    private var chunks = 0
    private let sleep = NSCondition()

    /// Spins of a worker before it sleeps: about 1 ms, longer than the serial work between the
    /// loops of a step (a worker woken from sleep joins a loop late, and the caller waits for it
    /// at the end), short enough not to hold a core long once a step is done
    /// (docs/kernel-notes.md).
    private static let spins = 400_000

    init(workers: Int) {
        self.workers = workers
        for index in 0..<workers {
            // The threads hold the pool until `shutDown` lets them return.
            let thread = Thread { self.work(index: index) }
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    /// Stops the workers; they exit at their next wake-up.
    func shutDown() {
        stopping.store(true, ordering: .releasing)
        sleep.lock(); generation.add(1, ordering: .releasing); sleep.broadcast(); sleep.unlock()
    }

    /// Runs body(0) here and body(1..<chunks) on the workers; false if a loop is already running.
    func run(chunks: Int, _ body: (Int) -> Void) -> Bool {
        precondition(chunks <= workers + 1)
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        withoutActuallyEscaping(body) { body in
            job = body
            self.chunks = chunks
            remaining.store(workers, ordering: .relaxed)
            sleep.lock(); generation.add(1, ordering: .releasing); sleep.broadcast(); sleep.unlock()
            body(0)
            while remaining.load(ordering: .acquiring) > 0 {}
            job = nil
        }
        busy.store(false, ordering: .releasing)
        return true
    }

    private func work(index: Int) {
        var seen = 0
        while true {
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins < Self.spins { continue }
                sleep.lock()
                while generation.load(ordering: .acquiring) == seen { sleep.wait() }
                sleep.unlock()
            }
            seen = generation.load(ordering: .acquiring)
            if stopping.load(ordering: .acquiring) { return }
            if index + 1 < chunks, let job { job(index + 1) }
            remaining.subtract(1, ordering: .releasing)
        }
    }
}
