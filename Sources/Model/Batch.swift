import Formats
import Kernels

/// The images, one-hot targets and labels of one rank's share of a batch, in buffers that are
/// reused from step to step.
public final class Batch {
    public let images = Tensor()
    public let targets = Tensor()
    public private(set) var labels: [UInt8] = []
    public let classes: Int

    public init(classes: Int) { self.classes = classes }

    private var scratch: [Float] = [], labelScratch: [UInt8] = []

    /// Reads the given pairs; every image must have the size of the first. `augment` gives the
    /// augmentation for a pair index, if any.
    public func load<S: Collection>(_ pairs: S, from data: SeedDataset, height: Int, width: Int,
                                    augment: ((Int) -> Augmentation)? = nil) throws where S.Element == Int {
        let n = pairs.count, plane = height * width
        images.reshape(Shape(n, 1, height, width))
        targets.reshape(Shape(n, classes, height, width))
        if labels.count < n * plane { labels = [UInt8](repeating: 0, count: n * plane) }
        for (slot, index) in pairs.enumerated() {
            let sample = try Sample(data.pairs[index], classes: classes)
            guard sample.height == height, sample.width == width else {
                throw FormatError(data.pairs[index].image, "image is \(sample.height)x\(sample.width), "
                                  + "the data set's first is \(height)x\(width)")
            }
            (images.data + slot * plane).update(from: sample.image, count: plane)
            labels.replaceSubrange(slot * plane ..< (slot + 1) * plane, with: sample.labels)
            if let augment {
                labels.withUnsafeMutableBufferPointer {
                    augment(index).apply(image: images.data + slot * plane, labels: $0.baseAddress! + slot * plane,
                                         height: height, width: width, scratch: &scratch, labelScratch: &labelScratch)
                }
            }
            // One-hot targets built on the fly, as the specification's Dataset builds them (docs/design.md, section 1).
            let t = targets.data + slot * classes * plane
            for c in 0..<classes {
                let row = t + c * plane
                for i in 0..<plane { row[i] = Int(labels[slot * plane + i]) == c ? 1 : 0 }
            }
        }
    }
}
