import Kernels

/// Running sums of per-image scores: the IoU of docs/design.md, section 1 (sigmoid > 0.5 against the one-hot mask,
/// per image and class, background skipped, (inter + 1e-6) / (union + 1e-6)), Dice likewise,
/// and the BCE loss. Laid out as one Double vector so ranks combine them with one allreduce.
public struct ScoreSums {
    public let classes: Int
    /// [loss sum, elements, images, iou per scored class..., dice per scored class...]
    public var values: [Double]

    public init(classes: Int) {
        self.classes = classes
        values = [Double](repeating: 0, count: 3 + 2 * (classes - 1))
    }

    public mutating func reset() { for i in values.indices { values[i] = 0 } }

    public var images: Double { values[2] }
    public var loss: Double { values[0] / max(values[1], 1) }
    public func iou(_ c: Int) -> Double { values[3 + c] / max(images, 1) }
    public func dice(_ c: Int) -> Double { values[2 + classes + c] / max(images, 1) }
    /// Mean over the scored classes (all but the last, the background).
    public var iou: Double { (0..<(classes - 1)).map(iou).reduce(0, +) / Double(classes - 1) }
    public var dice: Double { (0..<(classes - 1)).map(dice).reduce(0, +) / Double(classes - 1) }

    /// Adds the scores of `batch` images; `logits` are N x classes x spatial, labels N x spatial.
    public mutating func add(logits: UnsafePointer<Float>, labels: UnsafePointer<UInt8>, batch: Int, spatial: Int,
                             lossSum: Double) {
        values[0] += lossSum
        values[1] += Double(batch * classes * spatial)
        values[2] += Double(batch)
        let smooth = 1e-6
        for n in 0..<batch {
            for c in 0..<(classes - 1) {
                let z = logits + (n * classes + c) * spatial, lab = labels + n * spatial
                var inter = 0, predicted = 0, truth = 0
                for i in 0..<spatial {
                    let p = sigmoid(z[i]) > 0.5, t = Int(lab[i]) == c
                    if p { predicted += 1 }
                    if t { truth += 1 }
                    if p && t { inter += 1 }
                }
                let union = predicted + truth - inter
                values[3 + c] += (Double(inter) + smooth) / (Double(union) + smooth)
                values[2 + classes + c] += (2 * Double(inter) + smooth) / (Double(predicted + truth) + smooth)
            }
        }
    }
}
