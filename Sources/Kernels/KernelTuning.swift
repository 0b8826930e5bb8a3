/// How the banded and direct convolutions cut their work: the model context holds one (the
/// defaults, in training), `bench` sets it from its hidden flags, and tests pass small ones to
/// exercise many bands. Any setting gives the same results up to the order of float additions.
public struct KernelTuning: Equatable {
    /// Floats in one band of the column matrix (512 KiB: the band is written and read back in cache).
    public var bandFloats: Int
    /// Columns a band's GEMM gets at least, even where its column matrix then outgrows the cache:
    /// wide layers at low resolution (512 channels at 8x8) would otherwise make GEMMs a few dozen
    /// columns wide, far below what OpenBLAS's kernels need to run at speed.
    public var minBandColumns: Int
    /// Pixels per work item of the direct convolutions: a band of a large plane, or a group of
    /// small images.
    public var directPixels: Int
    /// Floats of the AVX2 direct kernels' padded copy of a band's input rows, which each tile of
    /// outputs reads again: the band is copied and convolved a part at a time, of about this size
    /// (128 KiB, a quarter of Zen 2 and 3's L2; docs/kernel-notes.md) ...
    public var paddedFloats: Int
    /// ... and of at least this many rows (or the band), as each part copies two more rows than
    /// it convolves.
    public var paddedMinRows: Int

    public init(bandFloats: Int = 1 << 17, minBandColumns: Int = 512, directPixels: Int = 4096,
                paddedFloats: Int = 1 << 15, paddedMinRows: Int = 8) {
        self.bandFloats = max(1, bandFloats)
        self.minBandColumns = max(1, minBandColumns)
        self.directPixels = max(1, directPixels)
        self.paddedFloats = max(1, paddedFloats)
        self.paddedMinRows = max(1, paddedMinRows)
    }
}

extension Conv2dShape {
    /// This shape computed with `tuning`.
    public func tuned(_ tuning: KernelTuning) -> Conv2dShape {
        var s = self
        s.tuning = tuning
        return s
    }
}
