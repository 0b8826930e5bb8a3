import Foundation

/// Optional per-layer-kind timing of the forward and backward passes (`unet-dist bench`).
///
/// Off by default: a layer checks `LayerContext.profile` for nil and does nothing else. When on,
/// each timed region costs two monotonic clock reads and no allocation.
public final class LayerProfile {
    public enum Kind: Int, CaseIterable {
        case conv, convTranspose, batchNorm, relu, pool, other
        /// The loss and its gradient (forward), the gradient sum over ranks and the optimizer (backward).
        case lossAndUpdate
        public var name: String {
            switch self {
            case .conv: "conv"
            case .convTranspose: "conv_transpose"
            case .batchNorm: "batch_norm"
            case .relu: "relu"
            case .pool: "pool"
            case .other: "other"
            case .lossAndUpdate: "loss_and_update"
            }
        }
    }

    /// Seconds per kind, summed since the last reset.
    public private(set) var forward = [Double](repeating: 0, count: Kind.allCases.count)
    public private(set) var backward = [Double](repeating: 0, count: Kind.allCases.count)

    /// Multiply-adds x 2 of the convolutions and transposed convolutions, forward and backward.
    public var convFlops = 0.0

    public init() {}

    public func reset() {
        for i in forward.indices { forward[i] = 0; backward[i] = 0 }
        convFlops = 0
    }

    @inline(__always)
    public static func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    @inline(__always)
    func add(_ kind: Kind, backward isBackward: Bool, since start: Double) {
        let dt = Self.now() - start
        if isBackward { backward[kind.rawValue] += dt } else { forward[kind.rawValue] += dt }
    }
}

extension LayerContext {
    /// Runs `body`, charging its time to `kind` when profiling is on.
    @inline(__always)
    func timed<T>(_ kind: LayerProfile.Kind, backward: Bool = false, _ body: () -> T) -> T {
        guard let profile else { return body() }
        let start = LayerProfile.now()
        let result = body()
        profile.add(kind, backward: backward, since: start)
        return result
    }
}
