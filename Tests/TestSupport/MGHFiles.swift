import Foundation

/// An MGH file laid out byte by byte from the format's field offsets (docs/cohorts.md), independent
/// of the reader: axis-aligned (identity direction cosines) with voxel sizes `delta` and the
/// volume's centre at `centre`, voxels x fastest as uchar (type 0) or float (type 3).
public func mghFile(dims: [Int], values: [Float], type: Int32, delta: [Float], centre: [Float]) -> Data {
    var out = [UInt8](repeating: 0, count: 284)
    func put<T: FixedWidthInteger>(_ v: T, _ at: Int) {
        withUnsafeBytes(of: v.bigEndian) { out.replaceSubrange(at ..< at + $0.count, with: $0) }
    }
    put(Int32(1), 0)
    for (n, d) in (dims + [1]).enumerated() { put(Int32(d), 4 + 4 * n) }
    put(type, 20)
    put(Int16(1), 28)
    let mdc: [Float] = [1, 0, 0, 0, 1, 0, 0, 0, 1]
    for (n, v) in (delta + mdc + centre).enumerated() { put(v.bitPattern, 30 + 4 * n) }
    for v in values {
        if type == 0 { out.append(UInt8(v)) } else { withUnsafeBytes(of: v.bitPattern.bigEndian) { out += $0 } }
    }
    return Data(out)
}
