import Kernels

/// A named view of one tensor inside a flat buffer.
public struct TensorView {
    public let name: String
    public let shape: [Int]
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
}

/// One allocation each for parameters, gradients and the optimizer's two moments, so that a
/// data-parallel gradient sum is a single allreduce; a second for BN running statistics.
///
/// Names and shapes are PyTorch's `state_dict()` ones (docs/design.md, section 3).
public final class ParameterStore {
    public private(set) var parameters: [TensorView] = []
    public private(set) var buffers: [TensorView] = []
    /// BatchNorm's num_batches_tracked, one per BN layer, with the layer's key.
    public private(set) var counterNames: [String] = []
    public var counters: [Int64] = []

    public private(set) var params = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    public private(set) var grads = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    public private(set) var firstMoment = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    public private(set) var secondMoment = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    public private(set) var bufferData = UnsafeMutablePointer<Float>.allocate(capacity: 1)
    public private(set) var parameterCount = 0
    public private(set) var bufferCount = 0
    /// Optimizer steps taken so far by each parameter tensor (PyTorch's per-parameter `step`):
    /// equal for all unless some were frozen for a while.
    public var steps: [Int] = []
    /// Parameters (by index into `parameters`) that the optimizer leaves alone, as PyTorch's
    /// optimizers skip a parameter whose requires_grad is off: no update, no decay, no step.
    public var frozen: Range<Int> = 0..<0
    private var sealed = false
    /// The gradient sum in buckets that start during the backward (GradientBuckets); nil: one
    /// allreduce after it.
    public var buckets: GradientBuckets?

    public init() {}

    deinit {
        for p in [params, grads, firstMoment, secondMoment, bufferData] { p.deallocate() }
    }

    func addParameter(_ name: String, _ shape: [Int]) -> TensorView {
        precondition(!sealed)
        let v = TensorView(name: name, shape: shape, offset: parameterCount)
        parameters.append(v); parameterCount += v.count; steps.append(0)
        return v
    }

    func addBuffer(_ name: String, _ shape: [Int]) -> TensorView {
        precondition(!sealed)
        let v = TensorView(name: name, shape: shape, offset: bufferCount)
        buffers.append(v); bufferCount += v.count
        return v
    }

    func addCounter(_ name: String) -> Int {
        counterNames.append(name); counters.append(0)
        return counters.count - 1
    }

    /// Allocates the flat buffers once every layer has registered its tensors.
    func seal() {
        precondition(!sealed)
        sealed = true
        for p in [params, grads, firstMoment, secondMoment, bufferData] { p.deallocate() }
        params = Self.zeros(parameterCount); grads = Self.zeros(parameterCount)
        firstMoment = Self.zeros(parameterCount); secondMoment = Self.zeros(parameterCount)
        bufferData = Self.zeros(bufferCount)
    }

    private static func zeros(_ n: Int) -> UnsafeMutablePointer<Float> {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: max(n, 1))
        p.initialize(repeating: 0, count: max(n, 1))
        return p
    }

    public func param(_ v: TensorView) -> UnsafeMutablePointer<Float> { params + v.offset }
    public func grad(_ v: TensorView) -> UnsafeMutablePointer<Float> { grads + v.offset }
    public func buffer(_ v: TensorView) -> UnsafeMutablePointer<Float> { bufferData + v.offset }

    public func zeroGradients() { grads.update(repeating: 0, count: parameterCount) }

    public func resetOptimizer() {
        firstMoment.update(repeating: 0, count: parameterCount)
        secondMoment.update(repeating: 0, count: parameterCount)
        steps = [Int](repeating: 0, count: parameters.count)
    }

    /// One update of every parameter outside `frozen`; consecutive tensors at the same step
    /// count go to the kernel as one range.
    public func applyOptimizer(_ settings: OptimizerSettings) {
        var i = 0
        while i < parameters.count {
            if frozen.contains(i) { i = frozen.upperBound; continue }
            steps[i] += 1
            var j = i + 1
            while j < parameters.count && !frozen.contains(j) && steps[j] + 1 == steps[i] { steps[j] += 1; j += 1 }
            let start = parameters[i].offset, end = j < parameters.count ? parameters[j].offset : parameterCount
            Kernels.optimizerStep(settings, params: params + start, grads: grads + start, first: firstMoment + start,
                                  second: secondMoment + start, count: end - start, step: steps[i])
            i = j
        }
    }
}
