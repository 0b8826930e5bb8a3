import Distributed
import Foundation
import Kernels
import MallocCounter
import Model
import TestSupport
import XCTest

/// The training step reuses every buffer: after the first step, forward, loss, backward,
/// gradient sum and optimizer update make no heap allocation at all. (With more than one
/// OpenBLAS thread, OpenBLAS's own thread pool allocates a few job records per threaded GEMM:
/// that is the library's, so the check runs with one.)
final class AllocationTests: XCTestCase {
    func testTrainingStepAllocatesNothingAfterTheFirst() throws { try assertNoAllocations(.fp32) }

    /// bf16 too: its per-band paired planes, its bf16 up-sampling, and the BatchNorm inputs it
    /// keeps in bf16.
    func testBF16TrainingStepAllocatesNothingAfterTheFirst() throws { try assertNoAllocations(.bf16) }

    func assertNoAllocations(_ precision: Precision) throws {
        guard malloc_counter_active() != 0 else { throw XCTSkip("a sanitizer owns the allocator in this build") }
        let dir = try makeTemporaryDirectory("alloc")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var c = TrainConfig()
        c.data = fixturesDirectory + "/seeddata"; c.runDir = dir + "/run"; c.batchSize = 4; c.testCount = 2
        c.precision = precision
        let trainer = try Trainer(c, comm: SingleProcess()) { _ in }
        setBLASThreads(1)
        defer { setBLASThreads(ProcessInfo.processInfo.activeProcessorCount) }
        try trainer.loadBatch(trainer.sampler.globalBatch(trainer.sampler.order(epoch: 1), step: 0))
        _ = trainer.computeStep(globalCount: 4)
        let before = malloc_counter_read()
        for _ in 0..<3 { _ = trainer.computeStep(globalCount: 4) }
        XCTAssertEqual(malloc_counter_read() - before, 0, "heap allocations in three training steps")
        let probe = UnsafeMutablePointer<Int>.allocate(capacity: 1000)
        probe.deallocate()
        XCTAssertGreaterThan(malloc_counter_read() - before, 0, "the counter sees allocations")
    }
}
