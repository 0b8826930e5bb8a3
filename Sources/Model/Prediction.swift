import Formats
import Kernels

/// Segments one slice (or a stack of same-sized slices): eval-mode logits and per-pixel argmax.
public final class Predictor {
    public let model: SegmentationModel
    let input = Tensor()

    public init(_ model: SegmentationModel) {
        self.model = model
        model.training = false
    }

    /// Logits (N x classes x H x W, owned by the model until the next call) and class masks for
    /// `count` images of H x W stored one after another in `images`.
    public func predict(_ images: UnsafeBufferPointer<Float>, count: Int, height: Int,
                        width: Int) -> (logits: Tensor, masks: [UInt8]) {
        input.reshape(Shape(count, model.config.inChannels, height, width))
        input.data.update(from: images.baseAddress!, count: input.count)
        let logits = model.forward(input)
        return (logits, classMasks(logits.data, count: count, classes: model.config.classes, spatial: height * width))
    }
}

/// The prediction (docs/design.md, section 1): per pixel, the class with the largest logit (the first on ties).
/// `logits` are count x classes x spatial; the result count x spatial.
public func classMasks(_ logits: UnsafePointer<Float>, count: Int, classes: Int, spatial: Int) -> [UInt8] {
    var masks = [UInt8](repeating: 0, count: count * spatial)
    for n in 0..<count {
        let z = logits + n * classes * spatial
        for i in 0..<spatial {
            var best = 0
            for c in 1..<classes where z[c * spatial + i] > z[best * spatial + i] { best = c }
            masks[n * spatial + i] = UInt8(best)
        }
    }
    return masks
}
