/// Conv2d over a batch, as im2col + one GEMM per image (darknet's scheme).
///
/// Weights are PyTorch's [outC, inC, k, k], read as an outC x (inC*k*k) matrix whose rows
/// line up with im2col's rows.
public struct Conv2dShape: Equatable {
    public var inC: Int, outC: Int, kernel: Int, stride: Int, padding: Int
    public init(inC: Int, outC: Int, kernel: Int, stride: Int = 1, padding: Int = 0) {
        self.inC = inC; self.outC = outC; self.kernel = kernel; self.stride = stride; self.padding = padding
    }
    public var weightCount: Int { outC * inC * kernel * kernel }

    public func window(height: Int, width: Int) -> Window {
        Window(channels: inC, height: height, width: width, kernel: kernel, stride: stride, padding: padding)
    }
    public func outputShape(_ x: Shape) -> Shape {
        let g = window(height: x.h, width: x.w)
        return Shape(x.n, outC, g.outHeight, g.outWidth)
    }
    /// A 1x1 stride-1 convolution needs no unfolding: the image is its own column matrix.
    var isPointwise: Bool { kernel == 1 && stride == 1 && padding == 0 }
    public func workspaceCount(height: Int, width: Int) -> Int {
        isPointwise ? 0 : window(height: height, width: width).rows * window(height: height, width: width).columns
    }
}

/// y = conv(x, weight) + bias.
public func conv2dForward(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>,
                          weight: UnsafePointer<Float>, bias: UnsafePointer<Float>?,
                          batch: Int, height: Int, width: Int, _ s: Conv2dShape, workspace: Workspace) {
    let g = s.window(height: height, width: width)
    let inCount = s.inC * height * width, outPlane = g.columns
    let col = workspace.floats(s.workspaceCount(height: height, width: width))
    for n in 0..<batch {
        let xn = x + n * inCount, yn = y + n * s.outC * outPlane
        let b: UnsafePointer<Float>
        if s.isPointwise { b = xn } else { im2col(col, xn, g); b = UnsafePointer(col) }
        sgemm(transA: false, transB: false, m: s.outC, n: outPlane, k: g.rows,
              a: weight, lda: g.rows, b: b, ldb: outPlane, beta: 0, c: yn, ldc: outPlane)
        if let bias {
            for o in 0..<s.outC {
                let row = yn + o * outPlane, v = bias[o]
                for i in 0..<outPlane { row[i] += v }
            }
        }
    }
}

/// Accumulates dweight and dbias (+=) and assigns dx when given.
public func conv2dBackward(dx: UnsafeMutablePointer<Float>?, dweight: UnsafeMutablePointer<Float>,
                           dbias: UnsafeMutablePointer<Float>?, dy: UnsafePointer<Float>,
                           x: UnsafePointer<Float>, weight: UnsafePointer<Float>,
                           batch: Int, height: Int, width: Int, _ s: Conv2dShape, workspace: Workspace) {
    let g = s.window(height: height, width: width)
    let inCount = s.inC * height * width, outPlane = g.columns
    let col = workspace.floats(s.workspaceCount(height: height, width: width))
    for n in 0..<batch {
        let xn = x + n * inCount, dyn = dy + n * s.outC * outPlane
        let colIn: UnsafePointer<Float>
        if s.isPointwise { colIn = xn } else { im2col(col, xn, g); colIn = UnsafePointer(col) }
        sgemm(transA: false, transB: true, m: s.outC, n: g.rows, k: outPlane,
              a: dyn, lda: outPlane, b: colIn, ldb: outPlane, beta: 1, c: dweight, ldc: g.rows)
        if let dbias { addRowSums(dbias, dyn, rows: s.outC, columns: outPlane) }
        guard let dx else { continue }
        let dxn = dx + n * inCount
        if s.isPointwise {
            sgemm(transA: true, transB: false, m: g.rows, n: outPlane, k: s.outC,
                  a: weight, lda: g.rows, b: dyn, ldb: outPlane, beta: 0, c: dxn, ldc: outPlane)
        } else {
            sgemm(transA: true, transB: false, m: g.rows, n: outPlane, k: s.outC,
                  a: weight, lda: g.rows, b: dyn, ldb: outPlane, beta: 0, c: col, ldc: outPlane)
            dxn.update(repeating: 0, count: inCount)
            col2imAdd(dxn, col, g)
        }
    }
}

/// sums[r] += sum of row r, accumulated in Double so long rows keep their precision.
func addRowSums(_ sums: UnsafeMutablePointer<Float>, _ m: UnsafePointer<Float>, rows: Int, columns: Int) {
    for r in 0..<rows {
        var acc = 0.0
        let row = m + r * columns
        for i in 0..<columns { acc += Double(row[i]) }
        sums[r] += Float(acc)
    }
}
