/// ReLU in place (PyTorch's inplace=True, as the seed uses it).
public func reluForward(_ x: UnsafeMutablePointer<Float>, count: Int) {
    for i in 0..<count { x[i] = max(x[i], 0) }
}

/// dx = dy where the ReLU's output y was positive; dx may alias dy.
public func reluBackward(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, y: UnsafePointer<Float>, count: Int) {
    for i in 0..<count { dx[i] = y[i] > 0 ? dy[i] : 0 }
}

/// MaxPool2d(2): 2x2 windows at stride 2; an odd last row or column is dropped (floor).
public func maxPool2Forward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, planes: Int, height: Int, width: Int) {
    let oh = height / 2, ow = width / 2
    for p in 0..<planes {
        let src = x + p * height * width, dst = y + p * oh * ow
        for oy in 0..<oh {
            let r0 = src + 2 * oy * width, r1 = r0 + width
            for ox in 0..<ow {
                dst[oy * ow + ox] = max(max(r0[2 * ox], r0[2 * ox + 1]), max(r1[2 * ox], r1[2 * ox + 1]))
            }
        }
    }
}

/// Routes each output gradient to the window's maximum; ties go to the first in scan order,
/// as PyTorch does. Assigns dx (dropped odd rows and columns get zero).
public func maxPool2Backward(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, x: UnsafePointer<Float>,
                             planes: Int, height: Int, width: Int) {
    let oh = height / 2, ow = width / 2
    dx.update(repeating: 0, count: planes * height * width)
    for p in 0..<planes {
        let src = x + p * height * width, grad = dx + p * height * width, g = dy + p * oh * ow
        for oy in 0..<oh {
            for ox in 0..<ow {
                let first = (2 * oy) * width + 2 * ox
                var best = first
                if src[first + 1] > src[best] { best = first + 1 }
                if src[first + width] > src[best] { best = first + width }
                if src[first + width + 1] > src[best] { best = first + width + 1 }
                grad[best] += g[oy * ow + ox]
            }
        }
    }
}

/// Adds `top` rows and `left` columns of zeros at the top/left of every plane, or, where negative,
/// cuts that many away: the seed's F.pad(up, (d, 0, d, 0)) before the skip concatenation.
public func padTopLeftForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, planes: Int,
                              height: Int, width: Int, top: Int, left: Int) {
    let oh = height + top, ow = width + left
    for p in 0..<planes {
        let src = x + p * height * width, dst = y + p * oh * ow
        for oy in 0..<oh {
            let iy = oy - top
            let row = dst + oy * ow
            guard iy >= 0 && iy < height else { row.update(repeating: 0, count: ow); continue }
            for ox in 0..<ow {
                let ix = ox - left
                row[ox] = (ix >= 0 && ix < width) ? src[iy * width + ix] : 0
            }
        }
    }
}

/// dx takes the gradient of the kept pixels; cut pixels get zero.
public func padTopLeftBackward(dx: UnsafeMutablePointer<Float>, dy: UnsafePointer<Float>, planes: Int,
                               height: Int, width: Int, top: Int, left: Int) {
    let oh = height + top, ow = width + left
    for p in 0..<planes {
        let dst = dx + p * height * width, src = dy + p * oh * ow
        for iy in 0..<height {
            let oy = iy + top
            for ix in 0..<width {
                let ox = ix + left
                dst[iy * width + ix] = (oy >= 0 && oy < oh && ox >= 0 && ox < ow) ? src[oy * ow + ox] : 0
            }
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
