import Distributed
import Kernels
import MallocCounter
import Model
import XCTest

/// A second rank that adds nothing: records, for every started sum, the gradients it was
/// started with, so that a test sees whether the backward still changed them afterwards.
final class RecordingCommunicator: Communicator {
    let rank = 0, size = 2, localSize = 1
    let base: UnsafeMutablePointer<Float>, count: Int
    /// The values each element had when its bucket started; how often it was started.
    let startedWith: UnsafeMutablePointer<Float>, starts: UnsafeMutablePointer<Int>
    var startsBeforeWait = 0, waits = 0

    init(_ store: ParameterStore) {
        base = store.grads; count = store.parameterCount
        startedWith = .allocate(capacity: count); starts = .allocate(capacity: count)
        reset()
    }

    deinit { startedWith.deallocate(); starts.deallocate() }

    func reset() {
        startedWith.initialize(repeating: .nan, count: count); starts.initialize(repeating: 0, count: count)
        startsBeforeWait = 0; waits = 0
    }

    func startAllreduceSum(_ values: UnsafeMutablePointer<Float>, count n: Int, what: StaticString) {
        let offset = values - base
        precondition(offset >= 0 && offset + n <= count)
        (startedWith + offset).update(from: values, count: n)
        for i in offset..<(offset + n) { starts[i] += 1 }
        startsBeforeWait += 1
    }

    func waitForStarted(what: StaticString) { waits += 1 }
    func allreduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, what: StaticString) {}
    func allreduceSum(_ values: UnsafeMutablePointer<Double>, count: Int, what: StaticString) {}
    func broadcast(_ bytes: UnsafeMutableRawPointer, count: Int, root: Int, what: StaticString) {}
    func barrier() {}
    func abort(code: Int32) -> Never { fatalError("abort \(code)") }
    func finalize() {}
}

/// The gradient sum in buckets started during the backward (docs/scaling.md, Overlap).
final class GradientBucketTests: XCTestCase {
    func models() -> [SegmentationModel] {
        [UNet(), UNetResNet(ModelConfig(.unetResnet, width: 8))]
    }

    func batch(_ model: SegmentationModel, size: Int = 32) -> (Tensor, Tensor) {
        let images = Tensor(Shape(2, model.config.inChannels, size, size))
        let targets = Tensor(Shape(2, model.config.classes, size, size))
        var rng = SplitMix64(seed: 7)
        for i in 0..<images.count { images.data[i] = rng.normal() }
        let plane = size * size
        for n in 0..<2 {
            for i in 0..<plane {
                let label = Int(rng.next() % UInt64(model.config.classes))
                targets.data[(n * model.config.classes + label) * plane + i] = 1
            }
        }
        return (images, targets)
    }

    func testBucketsAreWholeTensorsFromTheArenasEnd() {
        for model in models() {
            for mb in [1e-7, 0.001, 0.05, 1, 1000] {
                let store = model.store
                let buckets = GradientBuckets(store: store, comm: RecordingCommunicator(store), megabytes: mb)
                let least = Int(mb * 262_144), starts = Set(store.parameters.map(\.offset))
                var end = store.parameterCount
                for (i, r) in buckets.ranges.enumerated() {
                    XCTAssertEqual(r.upperBound, end, "\(model.config.kind) \(mb) MiB: contiguous, from the end")
                    XCTAssertTrue(starts.contains(r.lowerBound), "whole tensors")
                    if i + 1 < buckets.ranges.count { XCTAssertGreaterThanOrEqual(r.count, least) }
                    end = r.lowerBound
                }
                XCTAssertEqual(end, 0, "the whole arena")
                if mb == 1000 { XCTAssertEqual(buckets.ranges.count, 1) }
                if mb == 1e-7 { XCTAssertEqual(buckets.ranges.count, store.parameters.count, "one tensor each") }
            }
        }
    }

    /// Every element is started once, during the backward for most, and with its final value:
    /// a bucket started before the backward was done with it would hold an older one.
    func testEveryBucketStartsOnceWithItsFinalGradients() {
        for model in models() {
            let comm = RecordingCommunicator(model.store)
            model.useGradientBuckets(megabytes: 0.01, comm: comm)
            let (images, targets) = batch(model)
            model.store.buckets!.armed = true
            _ = model.accumulateGradients(images: images, targets: targets, globalCount: 2, comm: comm, zeroFirst: true)
            let during = comm.startsBeforeWait
            model.sumGradients(comm)
            let kind = model.config.kind.rawValue, buckets = model.store.buckets!.ranges.count
            XCTAssertGreaterThan(during, buckets / 2, "\(kind): most of the \(buckets) buckets start in the backward")
            XCTAssertEqual(comm.waits, 1, kind)
            let notOnce = (0..<comm.count).filter { comm.starts[$0] != 1 }
            let grads = model.store.grads
            let changed = (0..<comm.count).filter { comm.startedWith[$0].bitPattern != grads[$0].bitPattern }
            XCTAssertEqual(notOnce.count, 0, "\(kind): elements not started exactly once, from \(notOnce.first ?? -1)")
            XCTAssertEqual(changed.count, 0, "\(kind): changed after their bucket started, from \(changed.first ?? -1)")
        }
    }

    /// With micro-batches only the last backward may start the sums: the others' gradients are partial.
    func testAnUnarmedBackwardStartsNothing() {
        let model = UNet(), comm = RecordingCommunicator(model.store)
        model.useGradientBuckets(megabytes: 0.01, comm: comm)
        let (images, targets) = batch(model)
        model.store.buckets!.armed = false
        _ = model.accumulateGradients(images: images, targets: targets, globalCount: 4, comm: comm, zeroFirst: true)
        XCTAssertEqual(comm.startsBeforeWait, 0)
        model.store.buckets!.armed = true
        _ = model.accumulateGradients(images: images, targets: targets, globalCount: 4, comm: comm, zeroFirst: false)
        XCTAssertGreaterThan(comm.startsBeforeWait, 1)
        model.sumGradients(comm)
        XCTAssertTrue(model.store.buckets!.armed, "armed again for the next step")
        XCTAssertEqual((0..<comm.count).filter { comm.starts[$0] != 1 }.count, 0, "every element started once")
    }

    func testBucketedStepAllocatesNothingAfterTheFirst() throws {
        guard malloc_counter_active() != 0 else { throw XCTSkip("a sanitizer owns the allocator in this build") }
        setBLASThreads(1)
        defer { setBLASThreads(ProcessInfo.processInfo.activeProcessorCount) }
        let model = UNet(), comm = RecordingCommunicator(model.store)
        model.useGradientBuckets(megabytes: 0.01, comm: comm)
        let (images, targets) = batch(model)
        let settings = OptimizerSettings(kind: .adam, lr: 1e-3)
        _ = model.trainStep(images: images, targets: targets, globalCount: 2, comm: comm, optimizer: settings)
        let before = malloc_counter_read()
        for _ in 0..<3 {
            _ = model.trainStep(images: images, targets: targets, globalCount: 2, comm: comm, optimizer: settings)
        }
        XCTAssertEqual(malloc_counter_read() - before, 0, "heap allocations in three bucketed steps")
        XCTAssertEqual(comm.waits, 4)
    }
}
