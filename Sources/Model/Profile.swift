import Foundation

/// Optional per-layer-kind timing of the forward and backward passes (`unet-dist bench`).
///
/// Off by default: a layer checks `LayerContext.profile` for nil and does nothing else. When on,
/// each timed region costs two monotonic clock reads and no allocation.
public final class LayerProfile {
    public enum Kind: Int, CaseIterable {
        case conv, convTranspose, batchNorm, relu, pool, other
        /// The loss and its gradient (forward), the optimizer (backward).
        case lossAndUpdate
        /// Time inside the step's collectives: BatchNorm's reductions (forward and backward) and the
        /// gradient sum (backward). Mostly ranks waiting for each other; not counted in the kinds
        /// that call them.
        case collectives
        public var name: String {
            switch self {
            case .conv: "conv"
            case .convTranspose: "conv_transpose"
            case .batchNorm: "batch_norm"
            case .relu: "relu"
            case .pool: "pool"
            case .other: "other"
            case .lossAndUpdate: "loss_and_update"
            case .collectives: "collectives"
            }
        }
    }

    /// Seconds per kind, summed since the last reset.
    public private(set) var forward = [Double](repeating: 0, count: Kind.allCases.count)
    public private(set) var backward = [Double](repeating: 0, count: Kind.allCases.count)

    /// Multiply-adds x 2 per kind (the convolutions and transposed convolutions), forward and backward.
    public private(set) var flops = [Double](repeating: 0, count: Kind.allCases.count)
    /// Bytes per kind that the memory-bound layers' kernels read and write (each float32 element
    /// of every pass over a tensor counted once: what their rate is compared with memory's).
    public private(set) var bytes = [Double](repeating: 0, count: Kind.allCases.count)

    public func count(_ kind: Kind, flops: Int) { self.flops[kind.rawValue] += Double(flops) }
    /// `floats` float32 elements read or written by a memory-bound layer's kernels.
    public func count(_ kind: Kind, floats: Int) { bytes[kind.rawValue] += Double(4 * floats) }

    /// The convolutions' and transposed convolutions' FLOP.
    public var convFlops: Double { flops[Kind.conv.rawValue] + flops[Kind.convTranspose.rawValue] }

    /// Seconds in collectives so far: a timed region subtracts what it contains.
    public private(set) var collectiveSeconds = 0.0
    /// Whether the innermost timed region is part of the backward pass.
    private var inBackward = false

    public init() {}

    public func reset() {
        for i in forward.indices { forward[i] = 0; backward[i] = 0; flops[i] = 0; bytes[i] = 0 }
        collectiveSeconds = 0
    }

    @inline(__always)
    public static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    /// Runs `kind`'s region, charging it its time less the collectives inside it.
    @inline(__always)
    func time<T>(_ kind: Kind, backward isBackward: Bool, _ body: () -> T) -> T {
        let start = Self.now(), outer = inBackward, before = collectiveSeconds
        inBackward = isBackward
        let result = body()
        inBackward = outer
        let dt = Self.now() - start - (collectiveSeconds - before)
        if isBackward { backward[kind.rawValue] += dt } else { forward[kind.rawValue] += dt }
        return result
    }

    /// Runs a collective, charging it to `collectives` in the pass of the region around it.
    public func timeCollective(_ body: () -> Void) {
        let start = Self.now()
        body()
        let dt = Self.now() - start
        collectiveSeconds += dt
        if inBackward { backward[Kind.collectives.rawValue] += dt } else { forward[Kind.collectives.rawValue] += dt }
    }
}

extension LayerContext {
    /// Runs `body`, charging its time to `kind` when profiling is on.
    @inline(__always)
    func timed<T>(_ kind: LayerProfile.Kind, backward: Bool = false, _ body: () -> T) -> T {
        guard let profile else { return body() }
        return profile.time(kind, backward: backward, body)
    }

    /// Runs a collective, timed as `collectives` when profiling is on.
    @inline(__always)
    func collective(_ body: () -> Void) {
        guard let profile else { return body() }
        profile.timeCollective(body)
    }
}
