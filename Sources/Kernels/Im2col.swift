/// Geometry of a sliding k x k window over one C x H x W image.
public struct Window: Equatable {
    public var channels: Int, height: Int, width: Int
    public var kernel: Int, stride: Int, padding: Int

    public init(channels: Int, height: Int, width: Int, kernel: Int, stride: Int = 1, padding: Int = 0) {
        self.channels = channels; self.height = height; self.width = width
        self.kernel = kernel; self.stride = stride; self.padding = padding
    }

    public var outHeight: Int { (height + 2 * padding - kernel) / stride + 1 }
    public var outWidth: Int { (width + 2 * padding - kernel) / stride + 1 }
    /// Rows of the column matrix: one per (channel, ky, kx).
    public var rows: Int { channels * kernel * kernel }
    /// Columns of the column matrix: one per output position.
    public var columns: Int { outHeight * outWidth }
    /// Windows that neither overlap nor leave gaps nor reach outside the image (a 2x2 kernel at
    /// stride 2 over an even image, as ConvTranspose2d's output): every pixel in exactly one.
    public var tiles: Bool {
        kernel == stride && padding == 0 && height % stride == 0 && width % stride == 0
    }
}

/// Unfolds one image into a rows x columns matrix whose column j holds the window of output j.
public func im2col(_ col: UnsafeMutablePointer<Float>, _ image: UnsafePointer<Float>, _ g: Window) {
    im2col(col, image, g, rows: 0..<g.outHeight)
}

/// The columns of output rows `rows` only: a rows x (rows.count * outWidth) matrix, densely stored.
/// Rows of the column matrix are `ld` floats apart (default: dense).
public func im2col(_ col: UnsafeMutablePointer<Float>, _ image: UnsafePointer<Float>, _ g: Window, rows: Range<Int>,
                   ld: Int? = nil) {
    let ow = g.outWidth, k = g.kernel, s = g.stride, p = g.padding
    let ld = ld ?? rows.count * ow
    for c in 0..<g.channels {
        let plane = image + c * g.height * g.width
        for ky in 0..<k {
            for kx in 0..<k {
                var dst = col + ((c * k + ky) * k + kx) * ld
                for oy in rows {
                    let iy = oy * s - p + ky
                    if iy < 0 || iy >= g.height {
                        dst.update(repeating: 0, count: ow)
                        dst += ow
                        continue
                    }
                    let row = plane + iy * g.width
                    if s == 1 {
                        // Contiguous run with zero borders: the common 3x3 stride-1 case.
                        let start = kx - p
                        let lo = max(0, -start), hi = min(ow, g.width - start)
                        if lo > 0 { dst.update(repeating: 0, count: lo) }
                        if hi > lo { (dst + lo).update(from: row + start + lo, count: hi - lo) }
                        if hi < ow { (dst + max(hi, lo)).update(repeating: 0, count: ow - max(hi, lo)) }
                    } else if g.tiles {
                        for ox in 0..<ow { dst[ox] = row[ox * s + kx] }
                    } else {
                        for ox in 0..<ow {
                            let ix = ox * s - p + kx
                            dst[ox] = (ix >= 0 && ix < g.width) ? row[ix] : 0
                        }
                    }
                    dst += ow
                }
            }
        }
    }
}

/// The adjoint of im2col for windows that tile the image: assigns every pixel its one entry.
public func col2imTiles(_ image: UnsafeMutablePointer<Float>, _ col: UnsafePointer<Float>, _ g: Window) {
    precondition(g.tiles)
    let oh = g.outHeight, ow = g.outWidth, k = g.kernel
    for c in 0..<g.channels {
        let plane = image + c * g.height * g.width
        for ky in 0..<k {
            for kx in 0..<k {
                var src = col + ((c * k + ky) * k + kx) * oh * ow
                for oy in 0..<oh {
                    let row = plane + (oy * k + ky) * g.width + kx
                    for ox in 0..<ow { row[ox * k] = src[ox] }
                    src += ow
                }
            }
        }
    }
}

/// The adjoint of im2col: adds every column entry back onto the pixel it came from.
/// `image` is accumulated into, so zero it first for an assignment.
public func col2imAdd(_ image: UnsafeMutablePointer<Float>, _ col: UnsafePointer<Float>, _ g: Window) {
    let oh = g.outHeight, ow = g.outWidth, k = g.kernel, s = g.stride, p = g.padding
    for c in 0..<g.channels {
        let plane = image + c * g.height * g.width
        for ky in 0..<k {
            for kx in 0..<k {
                var src = col + ((c * k + ky) * k + kx) * oh * ow
                for oy in 0..<oh {
                    let iy = oy * s - p + ky
                    if iy < 0 || iy >= g.height { src += ow; continue }
                    let row = plane + iy * g.width
                    if s == 1 {
                        let start = kx - p
                        let lo = max(0, -start), hi = min(ow, g.width - start)
                        var ox = lo
                        while ox < hi { row[ox + start] += src[ox]; ox += 1 }
                    } else {
                        for ox in 0..<ow {
                            let ix = ox * s - p + kx
                            if ix >= 0 && ix < g.width { row[ix] += src[ox] }
                        }
                    }
                    src += ow
                }
            }
        }
    }
}
