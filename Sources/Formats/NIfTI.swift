import Foundation

/// A 3-D NIfTI-1 volume (.nii or .nii.gz, single file): its voxels as Float, x fastest, with
/// scl_slope/scl_inter applied, and the affine from voxel indices to scanner millimetres.
public struct NIfTIVolume {
    /// The stored voxel types read (NIfTI datatype codes).
    public enum DataType: Int, CaseIterable {
        case uint8 = 2, int16 = 4, int32 = 8, float32 = 16, float64 = 64, int8 = 256, uint16 = 512

        public var byteSize: Int {
            switch self {
            case .uint8, .int8: return 1
            case .int16, .uint16: return 2
            case .int32, .float32: return 4
            case .float64: return 8
            }
        }
    }

    /// nx, ny, nz (a 1-D or 2-D file has trailing 1s).
    public var dims: [Int]
    /// Voxel sizes pixdim[1...3] as the header states them.
    public var pixdim: [Double]
    /// 4 x 4, rows: scanner (x, y, z, 1) = affine * (i, j, k, 1).
    public var affine: [[Double]]
    /// What the file stored (values are converted to Float whatever it was).
    public var datatype: DataType
    /// nx * ny * nz values, index i + nx * (j + ny * k).
    public var values: [Float]

    public var count: Int { values.count }

    public init(dims: [Int], values: [Float], affine: [[Double]] = NIfTIVolume.identity,
                datatype: DataType = .float32) {
        precondition(dims.count == 3 && values.count == checkedProduct(dims) && affine.count >= 3)
        self.dims = dims
        self.values = values
        self.affine = Array(affine.prefix(3)) + [[0, 0, 0, 1]]
        self.datatype = datatype
        pixdim = (0..<3).map { j in (0..<3).map { affine[$0][j] * affine[$0][j] }.reduce(0, +).squareRoot() }
    }

    public static let identity: [[Double]] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]

    public subscript(i: Int, j: Int, k: Int) -> Float { values[i + dims[0] * (j + dims[1] * k)] }

    /// Voxel spacing along each voxel axis in mm: the lengths of the affine's columns.
    public var spacing: [Double] {
        (0..<3).map { j in (0..<3).map { affine[$0][j] * affine[$0][j] }.reduce(0, +).squareRoot() }
    }

    public init(path: String) throws { try self.init(data: try readFile(path), path: path) }

    /// Reads a .nii file's bytes, or a .nii.gz's (recognized by the gzip magic, not the name).
    public init(data: Data, path: String) throws {
        if isGzip(data) {
            let gz = try Gunzip(data, path: path)
            var bytes: [UInt8] = []
            try gz.read(NIfTIHeader.size, into: &bytes)
            let header = try bytes.withUnsafeBytes { try NIfTIHeader(parsing: $0, path: path) }
            // Only as many bytes as the header needs, so a lying header cannot make us allocate more
            // than the stream really holds; then the rest is checked for corruption.
            try gz.read(header.endOfData - bytes.count, into: &bytes)
            try header.checkLength(bytes.count, path: path)
            try gz.verifyRest()
            self = bytes.withUnsafeBytes { NIfTIVolume(header: header, file: $0) }
        } else {
            self = try data.withUnsafeBytes { raw in
                let header = try NIfTIHeader(parsing: raw, path: path)
                try header.checkLength(raw.count, path: path)
                return NIfTIVolume(header: header, file: raw)
            }
        }
    }

    private init(header h: NIfTIHeader, file: UnsafeRawBufferPointer) {
        dims = h.dims
        pixdim = h.pixdim
        affine = h.affine
        datatype = h.datatype
        let n = h.dataBytes / h.datatype.byteSize
        let src = UnsafeRawBufferPointer(rebasing: file[h.offset ..< h.endOfData])
        values = [Float](unsafeUninitializedCapacity: n) { out, initialized in
            decodeVoxels(src, type: h.datatype, count: n, bigEndian: h.bigEndian, into: out.baseAddress!)
            initialized = n
        }
        if let (slope, inter) = h.scaling {
            for i in 0..<n { values[i] = Float(Double(values[i]) * slope + inter) }
        }
    }

    /// The volume as a .nii.gz: `type` float32 or uint8 (values rounded and clamped to 0...255),
    /// the affine as the sform (scanner anatomical), pixdim from its column lengths.
    public func writeGzip(to path: String, as type: DataType = .float32) throws {
        guard type == .float32 || type == .uint8 else {
            throw FormatError(path, "can write float32 or uint8 only, not \(type)")
        }
        guard dims.allSatisfy({ (1...32767).contains($0) }) else {
            throw FormatError(path, "NIfTI-1 dimensions must be 1 to 32767, not \(dims)")
        }
        var file = NIfTIHeader.encode(dims: dims, type: type, pixdim: spacing, affine: affine)
        switch type {
        case .uint8:
            file.append(contentsOf: values.map { UInt8(max(0, min(255, $0.rounded()))) })
        default:
            values.withUnsafeBytes { raw in
                for i in 0..<values.count {
                    let bits = raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self).littleEndian
                    withUnsafeBytes(of: bits) { file.append(contentsOf: $0) }
                }
            }
        }
        try writeFileAtomically(try gzipCompress(Data(file)), to: path)
    }
}

/// Stored voxels of one type to Float, from the file's byte order (NIfTI's or MGH's).
func decodeVoxels(_ src: UnsafeRawBufferPointer, type: NIfTIVolume.DataType, count n: Int, bigEndian: Bool,
                  into out: UnsafeMutablePointer<Float>) {
    @inline(__always) func load<T: FixedWidthInteger>(_ i: Int, _: T.Type) -> T {
        let v = src.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self)
        return bigEndian ? T(bigEndian: v) : T(littleEndian: v)
    }
    @inline(__always) func int<T: FixedWidthInteger>(_: T.Type) {
        for i in 0..<n { out[i] = Float(load(i, T.self)) }
    }
    switch type {
    case .uint8: int(UInt8.self)
    case .int8: int(Int8.self)
    case .int16: int(Int16.self)
    case .uint16: int(UInt16.self)
    case .int32: int(Int32.self)
    case .float32:
        for i in 0..<n { out[i] = Float(bitPattern: load(i, UInt32.self)) }
    case .float64:
        for i in 0..<n { out[i] = Float(Double(bitPattern: load(i, UInt64.self))) }
    }
}

/// The NIfTI-1 header fields this reader uses, checked.
struct NIfTIHeader {
    static let size = 348

    var bigEndian: Bool
    var dims: [Int]
    var pixdim: [Double]
    var datatype: NIfTIVolume.DataType
    var offset: Int
    var scaling: (slope: Double, inter: Double)?
    var affine: [[Double]]

    /// The voxels' bytes and where they end, checked when the header is read.
    var dataBytes: Int
    var endOfData: Int

    init(parsing raw: UnsafeRawBufferPointer, path: String) throws {
        guard raw.count >= 4 else { throw FormatError(path, "not a NIfTI file (\(raw.count) bytes)") }
        let le = Int32(littleEndian: raw.loadUnaligned(as: Int32.self))
        let be = Int32(bigEndian: raw.loadUnaligned(as: Int32.self))
        // sizeof_hdr is 348 in the writer's byte order: the one place NIfTI-1 tells its endianness.
        guard le == 348 || be == 348 else {
            if le == 540 || be == 540 { throw FormatError(path, "a NIfTI-2 file: only NIfTI-1 is supported") }
            throw FormatError(path, "not a NIfTI-1 file (sizeof_hdr is \(le), expected 348)")
        }
        guard raw.count >= Self.size else {
            throw FormatError(path, "truncated NIfTI-1 header (\(raw.count) of \(Self.size) bytes)")
        }
        let r = FieldReader(raw: raw, bigEndian: be == 348)
        bigEndian = r.bigEndian
        let magic = Array(raw[344..<348])
        guard magic == Array("n+1\0".utf8) else {
            if magic == Array("ni1\0".utf8) {
                throw FormatError(path, "a NIfTI-1 .hdr/.img pair: only single-file .nii/.nii.gz is supported")
            }
            let hex = magic.map { String(format: "%02x", $0) }.joined(separator: " ")
            throw FormatError(path, "bad NIfTI-1 magic \(hex) (expected \"n+1\")")
        }
        dims = try Self.dimensions(r, path: path)
        guard let type = NIfTIVolume.DataType(rawValue: Int(r.int16(70))) else {
            throw FormatError(path, "unsupported NIfTI datatype \(r.int16(70))\(Self.typeName(Int(r.int16(70))))")
        }
        datatype = type
        pixdim = (1...3).map { Double(r.float32(76 + 4 * $0)) }
        offset = try Self.dataOffset(Double(r.float32(108)), path: path)
        // NIfTI-1 dims are 16-bit, so these cannot overflow today; checked all the same, as every
        // size taken from a file is.
        guard let bytes = checkedByteCount(dims, elementSize: type.byteSize),
              let end = Self.checkedSum(offset, bytes) else {
            let shape = dims.map(String.init).joined(separator: "x")
            throw FormatError(path, "NIfTI dimensions \(shape) \(type) are too large (the size overflows 64 bits)")
        }
        dataBytes = bytes
        endOfData = end
        let slope = Double(r.float32(112)), inter = Double(r.float32(116))
        // The standard: scaling applies where scl_slope is nonzero; a non-finite intercept counts as 0.
        if slope != 0 && slope.isFinite && !(slope == 1 && (inter == 0 || !inter.isFinite)) {
            scaling = (slope, inter.isFinite ? inter : 0)
        }
        affine = Self.affine(r, pixdim: pixdim)
    }

    private static func checkedSum(_ a: Int, _ b: Int) -> Int? {
        let (sum, overflow) = a.addingReportingOverflow(b)
        return overflow ? nil : sum
    }

    /// dim[0] in 1...7, every used dim at least 1, and nothing beyond the third but 1s.
    private static func dimensions(_ r: FieldReader, path: String) throws -> [Int] {
        let rank = Int(r.int16(40))
        guard (1...7).contains(rank) else { throw FormatError(path, "bad NIfTI dim[0] = \(rank) (1 to 7 expected)") }
        let all = (1...rank).map { Int(r.int16(40 + 2 * $0)) }
        if let bad = all.firstIndex(where: { $0 < 1 }) {
            throw FormatError(path, "bad NIfTI dim[\(bad + 1)] = \(all[bad])")
        }
        guard all.dropFirst(3).allSatisfy({ $0 == 1 }) else {
            let shape = all.map(String.init).joined(separator: "x")
            throw FormatError(path, "has \(rank) dimensions \(shape): only 3-D volumes are supported")
        }
        return Array((all + [1, 1]).prefix(3))
    }

    private static func dataOffset(_ v: Double, path: String) throws -> Int {
        guard v.isFinite, v >= 0, v < 1e9, v == v.rounded() else {
            throw FormatError(path, "bad NIfTI vox_offset \(v)")
        }
        // A single file's voxels start at 352 or later; some writers leave 0 there meaning "right
        // after the header".
        if v == 0 { return 352 }
        guard v >= Double(size) else { throw FormatError(path, "bad NIfTI vox_offset \(v) (inside the header)") }
        return Int(v)
    }

    /// sform where sform_code > 0, else qform where qform_code > 0, else plain pixdim scaling
    /// (the three methods of the NIfTI-1 standard, in its order of preference).
    private static func affine(_ r: FieldReader, pixdim: [Double]) -> [[Double]] {
        let srow = (0..<3).map { row in (0..<4).map { Double(r.float32(280 + 16 * row + 4 * $0)) } }
        if r.int16(254) > 0 && srow.joined().allSatisfy(\.isFinite) { return srow + [[0, 0, 0, 1]] }
        let scale = pixdim.map { $0 > 0 && $0.isFinite ? $0 : 1 }
        if r.int16(252) > 0 {
            let q = stride(from: 256, through: 276, by: 4).map { Double(r.float32($0)) }
            if q.allSatisfy(\.isFinite) {
                return quaternionAffine(b: q[0], c: q[1], d: q[2], offset: Array(q[3...5]), scale: scale,
                                        qfac: Double(r.float32(76)) < 0 ? -1 : 1)
            }
        }
        return [[scale[0], 0, 0, 0], [0, scale[1], 0, 0], [0, 0, scale[2], 0], [0, 0, 0, 1]]
    }

    /// The standard's qform: rotation from the unit quaternion (a, b, c, d), a = sqrt(1 - b² - c² - d²),
    /// columns scaled by the voxel sizes, the third also by qfac (pixdim[0], ±1).
    static func quaternionAffine(b: Double, c: Double, d: Double, offset: [Double], scale: [Double],
                                 qfac: Double) -> [[Double]] {
        var (a, b, c, d) = (1 - (b * b + c * c + d * d), b, c, d)
        if a < 1e-7 {
            // A 180-degree rotation (or rounding past it): renormalize (b, c, d), as nifti1_io does.
            let n = 1 / (b * b + c * c + d * d).squareRoot()
            (a, b, c, d) = (0, b * n, c * n, d * n)
        } else {
            a = a.squareRoot()
        }
        let rot = [[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                   [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                   [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - b * b - c * c]]
        let s = [scale[0], scale[1], scale[2] * qfac]
        return (0..<3).map { i in (0..<3).map { rot[i][$0] * s[$0] } + [offset[i]] } + [[0, 0, 0, 1]]
    }

    /// Data must be present up to the end the header claims.
    func checkLength(_ available: Int, path: String) throws {
        guard available >= endOfData else {
            let shape = dims.map(String.init).joined(separator: "x")
            throw FormatError(path, "truncated NIfTI data: \(shape) \(datatype) from byte \(offset) needs "
                              + "\(endOfData) bytes, file has \(available)")
        }
    }

    private static func typeName(_ code: Int) -> String {
        let names = [1: "binary", 32: "complex64", 128: "rgb24", 768: "uint32", 1024: "int64", 1280: "uint64",
                     1536: "float128", 1792: "complex128", 2048: "complex256", 2304: "rgba32"]
        return names[code].map { " (\($0))" } ?? ""
    }

    /// A little-endian header (348 bytes plus the 4-byte empty extension block) for `writeGzip`.
    static func encode(dims: [Int], type: NIfTIVolume.DataType, pixdim: [Double], affine: [[Double]]) -> [UInt8] {
        var h = [UInt8](repeating: 0, count: 352)
        func put<T: FixedWidthInteger>(_ v: T, _ at: Int) {
            withUnsafeBytes(of: v.littleEndian) { h.replaceSubrange(at ..< at + $0.count, with: $0) }
        }
        func putFloat(_ v: Double, _ at: Int) { put(Float(v).bitPattern, at) }
        put(Int32(348), 0)
        put(Int16(3), 40)
        for (n, d) in dims.enumerated() { put(Int16(d), 42 + 2 * n) }
        for n in 3..<7 { put(Int16(1), 42 + 2 * n) }
        put(Int16(type.rawValue), 70)
        put(Int16(type.byteSize * 8), 72)
        putFloat(1, 76)  // qfac
        for (n, p) in pixdim.enumerated() { putFloat(p, 80 + 4 * n) }
        putFloat(352, 108)  // vox_offset
        putFloat(1, 112)  // scl_slope 1, scl_inter 0: values as stored
        h[123] = 2  // xyzt_units: millimetres
        put(Int16(1), 254)  // sform_code: scanner anatomical
        for row in 0..<3 { for col in 0..<4 { putFloat(affine[row][col], 280 + 16 * row + 4 * col) } }
        h.replaceSubrange(344..<348, with: Array("n+1\0".utf8))
        return h
    }
}

/// Header fields in the file's byte order.
private struct FieldReader {
    let raw: UnsafeRawBufferPointer
    let bigEndian: Bool
    func int16(_ at: Int) -> Int16 {
        let v = raw.loadUnaligned(fromByteOffset: at, as: Int16.self)
        return bigEndian ? Int16(bigEndian: v) : Int16(littleEndian: v)
    }
    func float32(_ at: Int) -> Float {
        let v = raw.loadUnaligned(fromByteOffset: at, as: UInt32.self)
        return Float(bitPattern: bigEndian ? UInt32(bigEndian: v) : UInt32(littleEndian: v))
    }
}
