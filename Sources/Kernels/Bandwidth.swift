import Foundation

/// The memory bandwidth `computeThreads` threads get, in GB/s: the best of `repeats` timings of a
/// STREAM-style triad a[i] = b[i] + 3 c[i] over three arrays of `floats` elements, counted as
/// STREAM counts it (two reads and one write, 12 bytes per element). The default 3 x 128 MB is far
/// beyond any cache a rank could have to itself, so the figure is the memory's; the memory-bound
/// layers (BatchNorm, pooling, copies) are measured against it.
public func measureTriadBandwidth(floats n: Int = 32 << 20, repeats: Int = 10) -> Double {
    // One block, the arrays 64 and 192 bytes off a 4 KiB multiple apart: arrays that start at the same
    // offset in a page (as separate large allocations do) make loads wait on unrelated stores
    // (4K aliasing), and the triad then reads low by a third or more.
    let block = UnsafeMutablePointer<Float>.allocate(capacity: 3 * n + 64)
    defer { block.deallocate() }
    let a = block, b = block + n + 16, c = block + 2 * n + 48
    // First touched by the threads that then use each chunk: parallelChunks splits alike each time.
    parallelChunks(n) { _, range in
        for i in range { a[i] = 0; b[i] = 1; c[i] = 2 }
    }
    var best = Double.infinity
    for _ in 0..<repeats {
        var t0 = timespec(), t1 = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t0)
        parallelChunks(n) { _, range in
            for i in range { a[i] = b[i] + 3 * c[i] }
        }
        clock_gettime(CLOCK_MONOTONIC, &t1)
        best = min(best, Double(t1.tv_sec - t0.tv_sec) + Double(t1.tv_nsec - t0.tv_nsec) * 1e-9)
    }
    return 12 * Double(n) / best / 1e9
}
