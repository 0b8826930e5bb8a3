import CKernels

/// ReLU in place (PyTorch's inplace=True, as docs/design.md, section 1 uses it).
public func reluForward(_ x: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count { x[i] = max(x[i], 0) }
}

/// dx = dy where the ReLU's output y was positive; dx may alias dy.
public func reluBackward(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, y: UnsafePointer<Float>,
                         count: Int) {
    for i in 0..<count { dx[i] = y[i] > 0 ? dy[i] : 0 }
}

/// MaxPool2d(2): 2x2 windows at stride 2; an odd last row or column is dropped (floor).
public func maxPool2Forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, planes: Int, height: Int,
                            width: Int) {
    let oh = height / 2, ow = width / 2
    if vectorKernels != .portable {
        let forward = avx512Kernels ? cpool2_forward : cpool2_forward_avx2
        return parallelFor(planes) { p in
            forward(y + p * oh * ow, x + p * height * width, Int32(height), Int32(width))
        }
    }
    parallelFor(planes) { p in
        let src = x + p * height * width, dst = y + p * oh * ow
        for oy in 0..<oh {
            let r0 = src + 2 * oy * width, r1 = r0 + width
            for ox in 0..<ow {
                dst[oy * ow + ox] = max(max(r0[2 * ox], r0[2 * ox + 1]), max(r1[2 * ox], r1[2 * ox + 1]))
            }
        }
    }
}

/// The offset of the maximum of 2x2 window (oy, ox) in a plane `width` wide; ties go to the
/// first in scan order, as PyTorch's.
@inline(__always)
func windowMax(_ x: UnsafePointer<Float>, _ oy: Int, _ ox: Int, _ width: Int) -> Int {
    let a = 2 * oy * width + 2 * ox, b = a + 1, c = a + width, d = c + 1
    // Selects rather than branches: which pixel wins is data, and branches on it mispredict.
    var best = a, m = x[a]
    let vb = x[b], tb = vb > m
    best = tb ? b : best; m = tb ? vb : m
    let vc = x[c], tc = vc > m
    best = tc ? c : best; m = tc ? vc : m
    return x[d] > m ? d : best
}

/// Routes each output gradient to the window's maximum; ties go to the first in scan order,
/// as PyTorch does. Assigns dx (dropped odd rows and columns get zero), or with `accumulate`
/// adds to it: where the pooled tensor's gradient meets another path's (a UNet skip).
public func maxPool2Backward(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, x: UnsafePointer<Float>,
                             planes: Int, height: Int, width: Int, accumulate: Bool = false) {
    let oh = height / 2, ow = width / 2
    if vectorKernels != .portable {
        let backward = avx512Kernels ? cpool2_backward : cpool2_backward_avx2
        return parallelFor(planes) { p in
            backward(dx + p * height * width, dy + p * oh * ow, x + p * height * width, Int32(height), Int32(width),
                     accumulate ? 1 : 0)
        }
    }
    parallelFor(planes) { p in
        let src = x + p * height * width, grad = dx + p * height * width, g = dy + p * oh * ow
        if accumulate {
            // Every pixel of a window adds its share, the gradient or zero, as the vector kernels
            // add theirs: a -0.0 in dx turns +0.0 on every path alike.
            for oy in 0..<oh {
                let r0 = 2 * oy * width, r1 = r0 + width
                for ox in 0..<ow {
                    let a = r0 + 2 * ox, b = a + 1, c = r1 + 2 * ox, d = c + 1
                    let best = windowMax(src, oy, ox, width)
                    let v = g[oy * ow + ox]
                    grad[a] += best == a ? v : 0; grad[b] += best == b ? v : 0
                    grad[c] += best == c ? v : 0; grad[d] += best == d ? v : 0
                }
            }
            return
        }
        // Every pixel of a window is written (the gradient or zero); a dropped odd row or column is zeroed.
        for oy in 0..<oh {
            let r0 = 2 * oy * width, r1 = r0 + width
            for ox in 0..<ow {
                let a = r0 + 2 * ox, b = a + 1, c = r1 + 2 * ox, d = c + 1
                let best = windowMax(src, oy, ox, width)
                let v = g[oy * ow + ox]
                grad[a] = best == a ? v : 0; grad[b] = best == b ? v : 0
                grad[c] = best == c ? v : 0; grad[d] = best == d ? v : 0
            }
            if width % 2 == 1 { grad[r0 + width - 1] = 0; grad[r1 + width - 1] = 0 }
        }
        if height % 2 == 1 { (grad + (height - 1) * width).update(repeating: 0, count: width) }
    }
}

/// Adds `top` rows and `left` columns of zeros at the top/left of every plane, or, where negative,
/// cuts that many away: F.pad(up, (d, 0, d, 0)) before the skip concatenation
/// (docs/design.md, section 1).
public func padTopLeftForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, planes: Int,
                              height: Int, width: Int, top: Int, left: Int) {
    let oh = height + top, ow = width + left
    parallelFor(planes) { p in
        let src = x + p * height * width, dst = y + p * oh * ow
        for oy in 0..<oh {
            let iy = oy - top
            let row = dst + oy * ow
            guard iy >= 0 && iy < height else { row.update(repeating: 0, count: ow); continue }
            // Columns [lo, hi) come from the source row; the rest are zero.
            let lo = max(0, left), hi = min(ow, width + left)
            if lo > 0 { row.update(repeating: 0, count: lo) }
            if hi > lo { (row + lo).update(from: src + iy * width + (lo - left), count: hi - lo) }
            if hi < ow { (row + max(hi, lo)).update(repeating: 0, count: ow - max(hi, lo)) }
        }
    }
}

/// dx takes the gradient of the kept pixels; cut pixels get zero.
public func padTopLeftBackward(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, planes: Int,
                               height: Int, width: Int, top: Int, left: Int) {
    let oh = height + top, ow = width + left
    parallelFor(planes) { p in
        let dst = dx + p * height * width, src = dy + p * oh * ow
        for iy in 0..<height {
            let oy = iy + top, row = dst + iy * width
            guard oy >= 0 && oy < oh else { row.update(repeating: 0, count: width); continue }
            // Source columns ix in [lo, hi) exist in dy; the cut ones get zero.
            let lo = max(0, -left), hi = min(width, ow - left)
            if lo > 0 { row.update(repeating: 0, count: lo) }
            if hi > lo { (row + lo).update(from: src + oy * ow + lo + left, count: hi - lo) }
            if hi < width { (row + max(hi, lo)).update(repeating: 0, count: width - max(hi, lo)) }
        }
    }
}

/// torch.cat([a, b], dim=1) for NCHW tensors of equal batch and plane size.
public func concatChannelsForward(_ y: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, channelsA: Int,
                                  _ b: UnsafePointer<Float>, channelsB: Int, batch: Int, spatial: Int) {
    let na = channelsA * spatial, nb = channelsB * spatial
    for n in 0..<batch {
        (y + n * (na + nb)).update(from: a + n * na, count: na)
        (y + n * (na + nb) + na).update(from: b + n * nb, count: nb)
    }
}

/// Splits the gradient of a concatenation; either side may be skipped.
public func concatChannelsBackward(da: UnsafeMutablePointer<Float>?, channelsA: Int, db: UnsafeMutablePointer<Float>?,
                                   channelsB: Int, dy: UnsafePointer<Float>, batch: Int, spatial: Int) {
    let na = channelsA * spatial, nb = channelsB * spatial
    for n in 0..<batch {
        da.map { ($0 + n * na).update(from: dy + n * (na + nb), count: na) }
        db.map { ($0 + n * nb).update(from: dy + n * (na + nb) + na, count: nb) }
    }
}
