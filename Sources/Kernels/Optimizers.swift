import Foundation

/// Which rule turns a gradient into a parameter update; the formulas are PyTorch's.
public enum OptimizerKind: String, CaseIterable, Codable {
    case adam, adamw, sgd
}

public struct OptimizerSettings: Equatable, Codable {
    public var kind: OptimizerKind
    // Hyperparameters are Doubles, as in PyTorch, so that derived constants such as 1 - beta2
    // are rounded to Float32 once, like PyTorch's scalar arguments, not computed in Float32.
    public var lr: Double
    public var beta1 = 0.9, beta2 = 0.999, eps = 1e-8
    public var momentum = 0.0
    public var weightDecay = 0.0
    public init(kind: OptimizerKind, lr: Double, momentum: Double = 0, weightDecay: Double = 0) {
        self.kind = kind; self.lr = lr; self.momentum = momentum; self.weightDecay = weightDecay
    }
}

/// One update of a flat parameter buffer. `first` and `second` are the optimizer's state
/// (Adam's exp_avg and exp_avg_sq, SGD's momentum buffer in `first`); `step` counts from 1.
public func optimizerStep(_ s: OptimizerSettings, params: UnsafeMutablePointer<Float>, grads: UnsafePointer<Float>,
                          first: UnsafeMutablePointer<Float>, second: UnsafeMutablePointer<Float>,
                          count: Int, step: Int) {
    switch s.kind {
    case .adam, .adamw:
        let decoupled = s.kind == .adamw
        let bc1 = 1 - pow(s.beta1, Double(step)), bc2 = 1 - pow(s.beta2, Double(step))
        let stepSize = Float(s.lr / bc1), bc2Sqrt = Float(bc2.squareRoot())
        let decay = Float(1 - s.lr * s.weightDecay), wd = Float(s.weightDecay)
        let a1 = Float(1 - s.beta1), b2 = Float(s.beta2), a2 = Float(1 - s.beta2), eps = Float(s.eps)
        for i in 0..<count {
            var g = grads[i]
            if decoupled { params[i] *= decay } else if wd != 0 { g += wd * params[i] }
            first[i] += (g - first[i]) * a1
            second[i] = second[i] * b2 + a2 * g * g
            let denom = second[i].squareRoot() / bc2Sqrt + eps
            params[i] -= stepSize * first[i] / denom
        }
    case .sgd:
        let lr = Float(s.lr), wd = Float(s.weightDecay), momentum = Float(s.momentum)
        for i in 0..<count {
            var g = grads[i]
            if wd != 0 { g += wd * params[i] }
            if momentum != 0 {
                first[i] = step == 1 ? g : momentum * first[i] + g
                g = first[i]
            }
            params[i] -= lr * g
        }
    }
}
