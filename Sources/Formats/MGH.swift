import Foundation

/// A FreeSurfer MGH volume (.mgh, or gzipped .mgz as `mri/T1.mgz` and `mri/aseg.mgz`): its voxels as
/// Float, x fastest, then y, z and the frame, and the affine from voxel indices to scanner (RAS)
/// millimetres. The layout (docs/cohorts.md): a 284-byte big-endian header, then the voxels,
/// big-endian, then optional scan parameters and tags, which are not needed here.
public struct MGHVolume {
    /// The voxel types FreeSurfer writes (MRI_UCHAR, MRI_INT, MRI_FLOAT, MRI_SHORT, MRI_USHRT).
    public enum DataType: Int32, CaseIterable {
        case uchar = 0, int = 1, float = 3, short = 4, ushort = 10

        /// The same type in NIfTI's terms, which the voxel decoder and `NIfTIVolume` speak.
        public var nifti: NIfTIVolume.DataType {
            switch self {
            case .uchar: return .uint8
            case .int: return .int32
            case .float: return .float32
            case .short: return .int16
            case .ushort: return .uint16
            }
        }
    }

    static let headerSize = 284

    /// width, height, depth.
    public var dims: [Int]
    public var frames: Int
    /// 4 x 4, rows: scanner (x, y, z, 1) = affine * (i, j, k, 1).
    public var affine: [[Double]]
    public var datatype: DataType
    /// dims product x frames values.
    public var values: [Float]

    public subscript(i: Int, j: Int, k: Int) -> Float { values[i + dims[0] * (j + dims[1] * k)] }

    public init(path: String) throws { try self.init(data: try readFile(path), path: path) }

    /// Reads an .mgh file's bytes, or an .mgz's (recognized by the gzip magic, not the name).
    public init(data: Data, path: String) throws {
        if isGzip(data) {
            let gz = try Gunzip(data, path: path)
            var bytes: [UInt8] = []
            try gz.read(Self.headerSize, into: &bytes)
            let header = try bytes.withUnsafeBytes { try MGHHeader(parsing: $0, path: path) }
            // Only as many bytes as the header needs: a lying header costs no more memory than the
            // stream really holds. The rest (scan parameters, tags) is still checked for corruption.
            try gz.read(header.endOfData - bytes.count, into: &bytes)
            try header.checkLength(bytes.count, path: path)
            try gz.verifyRest()
            self = bytes.withUnsafeBytes { MGHVolume(header: header, file: $0) }
        } else {
            self = try data.withUnsafeBytes { raw in
                let header = try MGHHeader(parsing: raw, path: path)
                try header.checkLength(raw.count, path: path)
                return MGHVolume(header: header, file: raw)
            }
        }
    }

    private init(header h: MGHHeader, file: UnsafeRawBufferPointer) {
        dims = h.dims
        frames = h.frames
        affine = h.affine
        datatype = h.datatype
        let n = h.dataBytes / h.datatype.nifti.byteSize
        let src = UnsafeRawBufferPointer(rebasing: file[Self.headerSize ..< h.endOfData])
        values = [Float](unsafeUninitializedCapacity: n) { out, initialized in
            decodeVoxels(src, type: h.datatype.nifti, count: n, bigEndian: true, into: out.baseAddress!)
            initialized = n
        }
    }

    /// The volume as the program's one volume type; a file of several frames (a time series, a
    /// multi-echo scan) is refused: slices are cut from one 3-D image.
    public func volume(path: String) throws -> NIfTIVolume {
        guard frames == 1 else {
            throw FormatError(path, "MGH volume has \(frames) frames: only 3-D volumes (1 frame) are supported")
        }
        return NIfTIVolume(dims: dims, values: values, affine: affine, datatype: datatype.nifti)
    }
}

/// Reads a 3-D volume by its name: FreeSurfer's .mgz/.mgh, otherwise NIfTI-1 (.nii, .nii.gz).
public func readVolume(path: String) throws -> NIfTIVolume {
    if isMGHPath(path) { return try MGHVolume(path: path).volume(path: path) }
    return try NIfTIVolume(path: path)
}

/// Whether the name says MGH (.mgh or .mgz, any case).
public func isMGHPath(_ path: String) -> Bool {
    let name = path.lowercased()
    return name.hasSuffix(".mgz") || name.hasSuffix(".mgh")
}

/// A volume file's name without directory and extension: "sub-01/T1.nii.gz" -> "T1", "T1.mgz" -> "T1".
public func volumeStem(_ path: String) -> String {
    var name = URL(fileURLWithPath: path).lastPathComponent
    for ext in [".gz", ".nii", ".mgz", ".mgh"] where name.lowercased().hasSuffix(ext) { name.removeLast(ext.count) }
    return name.isEmpty ? "slice" : name
}

/// The MGH header fields this reader uses, checked.
struct MGHHeader {
    var dims: [Int]
    var frames: Int
    var datatype: MGHVolume.DataType
    var affine: [[Double]]
    var dataBytes: Int
    var endOfData: Int

    init(parsing raw: UnsafeRawBufferPointer, path: String) throws {
        guard raw.count >= MGHVolume.headerSize else {
            throw FormatError(path, "truncated MGH header (\(raw.count) of \(MGHVolume.headerSize) bytes)")
        }
        func int32(_ at: Int) -> Int32 { Int32(bigEndian: raw.loadUnaligned(fromByteOffset: at, as: Int32.self)) }
        func int16(_ at: Int) -> Int16 { Int16(bigEndian: raw.loadUnaligned(fromByteOffset: at, as: Int16.self)) }
        func float(_ at: Int) -> Double {
            Double(Float(bitPattern: UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt32.self))))
        }
        guard int32(0) == 1 else { throw FormatError(path, "not an MGH file (version \(int32(0)), expected 1)") }
        let all = (0..<4).map { Int(int32(4 + 4 * $0)) }
        let names = ["width", "height", "depth", "frames"]
        if let bad = all.indices.first(where: { !(1...maxImageSide).contains(all[$0]) }) {
            throw FormatError(path, "bad MGH \(names[bad]) \(all[bad]) (1 to \(maxImageSide) expected)")
        }
        dims = Array(all.prefix(3))
        frames = all[3]
        guard let type = MGHVolume.DataType(rawValue: int32(20)) else {
            throw FormatError(path, "unsupported MGH data type \(int32(20))\(Self.typeName(int32(20)))")
        }
        datatype = type
        guard let bytes = checkedByteCount(all, elementSize: type.nifti.byteSize),
              let end = Self.plusHeader(bytes) else {
            throw FormatError(path, "MGH dimensions \(all.map(String.init).joined(separator: "x")) are too large "
                              + "(the size overflows 64 bits)")
        }
        dataBytes = bytes
        endOfData = end
        // As nibabel reads it: a goodRASFlag of 0 means "no orientation stored", for which it
        // assumes 1 mm voxels, its default direction cosines and the centre at the scanner origin.
        var delta = (0..<3).map { float(30 + 4 * $0) }
        var mdc = (0..<3).map { row in (0..<3).map { float(42 + 12 * row + 4 * $0) } }
        var centre = (0..<3).map { float(78 + 4 * $0) }
        if int16(28) == 0 {
            delta = [1, 1, 1]
            mdc = [[-1, 0, 0], [0, 0, 1], [0, -1, 0]]
            centre = [0, 0, 0]
        }
        guard delta.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw FormatError(path, "bad MGH voxel size \(delta.map { String($0) }.joined(separator: " x ")) "
                              + "(positive and finite expected)")
        }
        guard (mdc.joined() + centre).allSatisfy(\.isFinite) else {
            throw FormatError(path, "MGH orientation (direction cosines or centre) is not finite")
        }
        // Column j of the rotation is voxel axis j's direction (Mdc's row j) times its voxel size; the
        // centre c_ras is where voxel (width/2, height/2, depth/2) lies.
        let m = (0..<3).map { r in (0..<3).map { j in mdc[j][r] * delta[j] } }
        let half = dims.map { Double($0) / 2 }
        var rows: [[Double]] = []
        for r in 0..<3 {
            let offset: Double = centre[r] - (m[r][0] * half[0] + m[r][1] * half[1] + m[r][2] * half[2])
            rows.append(m[r] + [offset])
        }
        affine = rows + [[0, 0, 0, 1]]
    }

    private static func plusHeader(_ bytes: Int) -> Int? {
        let (end, overflow) = bytes.addingReportingOverflow(MGHVolume.headerSize)
        return overflow ? nil : end
    }

    func checkLength(_ available: Int, path: String) throws {
        guard available >= endOfData else {
            let shape = (dims + [frames]).map(String.init).joined(separator: "x")
            throw FormatError(path, "truncated MGH data: \(shape) \(datatype) needs \(endOfData) bytes, "
                              + "file has \(available)")
        }
    }

    private static func typeName(_ code: Int32) -> String {
        let names: [Int32: String] = [2: "long", 5: "bitmap", 6: "tensor", 7: "float4", 8: "long8", 9: "rgb"]
        return names[code].map { " (\($0))" } ?? ""
    }
}
