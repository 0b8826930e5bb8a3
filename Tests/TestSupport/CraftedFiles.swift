import Foundation

/// Files whose headers state sizes meant to fool a reader: products that overflow 64 bits or wrap
/// around to a small number, and dimensions that multiply far past the bytes the file holds.
/// Built byte by byte, independent of the writers under test.
public enum CraftedFile {
    /// A .npy (format 1.0) with `shape` as its header states it, over `payload` bytes.
    public static func npy(shape: String, descr: String = "<f4", payload: Int = 64) -> Data {
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(shape), }"
        while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
        header += "\n"
        let n = header.utf8.count
        var d = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0, UInt8(n & 0xFF), UInt8(n >> 8)])
        d.append(Data(header.utf8))
        d.append(Data(repeating: 0, count: payload))
        return d
    }

    /// 3074457345618258603 x 6 elements: 2^64 + 2, which wraps around to 2.
    public static let wrappingNpy = npy(shape: "(3074457345618258603, 6)")
    /// 2^32 x 2^32 elements: 2^64, which wraps around to 0.
    public static let hugeNpy = npy(shape: "(4294967296, 4294967296)")

    /// A safetensors file from its JSON header and data.
    public static func safetensors(header: String, data: Int = 0) -> Data {
        var json = Array(header.utf8)
        while json.count % 8 != 0 { json.append(0x20) }
        var d = Data()
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { d.append(contentsOf: $0) }
        d.append(contentsOf: json)
        d.append(Data(repeating: 0, count: data))
        return d
    }

    /// The first tensor a checkpoint reader looks at, 2^32 x 2^32 x 16 float32 over no bytes.
    public static let overflowingSafetensors = safetensors(header:
        #"{"conv1.0.0.weight":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}"#)

    /// A NIfTI-1 header (little-endian, vox_offset 352) stating `dims` of `datatype`, then
    /// `payload` bytes of voxels.
    public static func nifti(dims: [Int16], datatype: Int16 = 4, bitpix: Int16 = 16, payload: Int = 1024) -> Data {
        var h = [UInt8](repeating: 0, count: 352)
        func put<T: FixedWidthInteger>(_ v: T, _ at: Int) {
            withUnsafeBytes(of: v.littleEndian) { h.replaceSubrange(at ..< at + $0.count, with: $0) }
        }
        put(Int32(348), 0)
        put(Int16(dims.count), 40)
        for (n, d) in dims.enumerated() { put(d, 42 + 2 * n) }
        for n in dims.count..<7 { put(Int16(1), 42 + 2 * n) }
        put(datatype, 70); put(bitpix, 72)
        for n in 0..<4 { put(Float(1).bitPattern, 76 + 4 * n) }  // qfac and pixdim
        put(Float(352).bitPattern, 108)  // vox_offset
        h.replaceSubrange(344..<348, with: Array("n+1\0".utf8))
        return Data(h) + Data(repeating: 0, count: payload)
    }

    /// 32767^3 int16 voxels (70 TB) stated over 1 KiB.
    public static let hugeNIfTI = nifti(dims: [32767, 32767, 32767])
}

/// Every file of a seed-layout data set (MRIs/ and Segmentations/), by its path under `dir`.
public func seedLayoutFiles(_ dir: String) throws -> [String: Data] {
    var out: [String: Data] = [:]
    for sub in ["MRIs", "Segmentations"] {
        for n in try FileManager.default.contentsOfDirectory(atPath: "\(dir)/\(sub)") {
            out["\(sub)/\(n)"] = FileManager.default.contents(atPath: "\(dir)/\(sub)/\(n)")
        }
    }
    return out
}
