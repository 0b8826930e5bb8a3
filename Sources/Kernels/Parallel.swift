import Foundation

/// Threads our own loops (and per-image GEMMs) may use; 1 runs everything on the caller's thread.
nonisolated(unsafe) public private(set) var computeThreads = 1

public func setComputeThreads(_ n: Int) { computeThreads = max(1, n) }

/// Calls body(i) for i in 0..<count, split into contiguous chunks over `computeThreads` threads.
/// With one thread (or one item) it is a plain loop: nothing is dispatched or allocated.
@inline(__always)
public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
    let t = min(computeThreads, count)
    if t <= 1 {
        for i in 0..<count { body(i) }
        return
    }
    DispatchQueue.concurrentPerform(iterations: t) { chunk in
        let lo = chunk * count / t, hi = (chunk + 1) * count / t
        for i in lo..<hi { body(i) }
    }
}

/// Splits 0..<count into at most `computeThreads` contiguous chunks and calls body(chunk, range)
/// for each, concurrently; `chunk` indexes per-thread scratch. One chunk runs on the caller's thread.
@inline(__always)
public func parallelChunks(_ count: Int, _ body: (_ chunk: Int, _ range: Range<Int>) -> Void) {
    let t = min(computeThreads, count)
    if t <= 1 {
        if count > 0 { body(0, 0..<count) }
        return
    }
    DispatchQueue.concurrentPerform(iterations: t) { chunk in
        body(chunk, (chunk * count / t)..<((chunk + 1) * count / t))
    }
}
