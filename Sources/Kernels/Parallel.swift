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

/// Calls body(i) for i in 0..<count over `computeThreads` threads, each item once, as
/// `parallelItems` shares them: for items that write only their own outputs.
/// With one thread (or one item) it is a plain loop: nothing is dispatched or allocated.
@inline(__always)
public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
    parallelItems(count) { _, i in body(i) }
}

/// Calls body(thread, i) for i in 0..<count, each once, over `computeThreads` threads: each
/// thread runs its own contiguous share in order and then takes what is left of the others'
/// from their ends, so that a thread the machine slows down (another process, an interrupt)
/// does not hold the others up at the end of the loop (docs/kernel-notes.md). Which thread runs
/// an item varies from run to run: only for items that write their own outputs, never sums
/// across items. `thread` indexes per-thread scratch.
@inline(__always)
public func parallelItems(_ count: Int, _ body: (_ thread: Int, _ item: Int) -> Void) {
    let t = min(computeThreads, count)
    if t > 1, let pool, pool.run(items: count, threads: t, body) { return }
    // One thread, or the pool is busy (a loop started inside another, or from a second
    // thread): run here.
    for i in 0..<count { body(0, i) }
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
    /// One share of items per thread, for `run(items:)`.
    private let shares: [Share]

    /// Spins of a worker before it sleeps: about 1 ms, longer than the serial work between the
    /// loops of a step (a worker woken from sleep joins a loop late, and the caller waits for it
    /// at the end), short enough not to hold a core long once a step is done
    /// (docs/kernel-notes.md).
    private static let spins = 400_000

    init(workers: Int) {
        self.workers = workers
        shares = (0...workers).map { _ in Share() }
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
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        start(chunks: chunks, body)
        return true
    }

    /// Runs body(thread, i) for i in 0..<count on `threads` threads (this one and threads - 1
    /// workers), each item once: thread k starts on share k and then takes items from the ends
    /// of the others' shares, a few at a time where items are many (a loop over planes), one
    /// at a time where they are few. False if a loop is already running.
    func run(items count: Int, threads: Int, _ body: (_ thread: Int, _ item: Int) -> Void) -> Bool {
        precondition(count < 1 << 32)
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else { return false }
        for k in 0..<threads { shares[k].set(front: k * count / threads, back: (k + 1) * count / threads) }
        let grain = max(1, count / (32 * threads))
        start(chunks: threads) { k in
            while let range = shares[k].take(grain, fromFront: true) { for i in range { body(k, i) } }
            for step in 1..<threads {
                let other = shares[(k + step) % threads]
                while let range = other.take(grain, fromFront: false) { for i in range { body(k, i) } }
            }
        }
        return true
    }

    /// Runs a loop once `busy` is held, and releases it.
    private func start(chunks: Int, _ body: (Int) -> Void) {
        precondition(chunks <= workers + 1)
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

/// The items of a thread's share not yet taken, front ..< back, in one atomic word (front in the
/// high 32 bits): its thread takes from the front, the others from the back.
private final class Share: @unchecked Sendable {
    private let range = Atomic<UInt64>(0)

    func set(front: Int, back: Int) { range.store(UInt64(front) << 32 | UInt64(back), ordering: .relaxed) }

    /// Up to `grain` items from the front or the back; nil once none is left.
    func take(_ grain: Int, fromFront: Bool) -> Range<Int>? {
        var v = range.load(ordering: .relaxed)
        while true {
            let front = Int(v >> 32), back = Int(v & 0xFFFF_FFFF)
            guard front < back else { return nil }
            let taken = fromFront ? front..<min(back, front + grain) : max(front, back - grain)..<back
            let next = fromFront ? (front + taken.count, back) : (front, back - taken.count)
            let (exchanged, now) = range.compareExchange(expected: v, desired: UInt64(next.0) << 32 | UInt64(next.1),
                                                         ordering: .relaxed)
            if exchanged { return taken }
            v = now
        }
    }
}
