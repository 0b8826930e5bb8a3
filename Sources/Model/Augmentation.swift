import Kernels

/// A random flip, 90-degree rotation and intensity jitter for one training sample, drawn from
/// (seed, epoch, sample) alone: the same on every rank and for every number of ranks.
public struct Augmentation: Equatable {
    public var flipRows = false, flipColumns = false
    /// Quarter turns (0...3); only square images are turned.
    public var quarterTurns = 0
    /// image * scale + shift.
    public var scale: Float = 1, shift: Float = 0

    public init() {}

    public init(seed: UInt64, epoch: Int, sample: Int) {
        var rng = SplitMix64(seed: seed &* 0xD1B5_4A32_D192_ED03 &+ UInt64(epoch) &* 0x9E37_79B9 &+ UInt64(sample))
        flipRows = rng.next() & 1 == 1
        flipColumns = rng.next() & 1 == 1
        quarterTurns = Int(rng.next() % 4)
        scale = rng.uniform(0.9, 1.1)
        shift = rng.uniform(-0.05, 0.05)
    }

    /// Where output pixel (r, c) of an h x w image comes from.
    @inline(__always)
    func source(_ r: Int, _ c: Int, _ h: Int, _ w: Int) -> Int {
        var (y, x) = (r, c)
        if h == w {
            for _ in 0..<quarterTurns { (y, x) = (x, h - 1 - y) }
        }
        if flipRows { y = h - 1 - y }
        if flipColumns { x = w - 1 - x }
        return y * w + x
    }

    /// Transforms one image and its labels in place (the labels only geometrically).
    public func apply(image: UnsafeMutablePointer<Float>, labels: UnsafeMutablePointer<UInt8>, height h: Int,
                      width w: Int,
                      scratch: inout [Float], labelScratch: inout [UInt8]) {
        let n = h * w
        if scratch.count < n {
            scratch = [Float](repeating: 0, count: n)
            labelScratch = [UInt8](repeating: 0, count: n)
        }
        for i in 0..<n { scratch[i] = image[i]; labelScratch[i] = labels[i] }
        for r in 0..<h {
            for c in 0..<w {
                let s = source(r, c, h, w)
                image[r * w + c] = scratch[s] * scale + shift
                labels[r * w + c] = labelScratch[s]
            }
        }
    }
}
