import Foundation

/// A NumPy .npy array (format versions 1, 2 and 3), its values converted on request.
public struct NpyArray {
    public enum ElementType: Equatable {
        case float16, float32, float64, int(bytes: Int, signed: Bool), bool
    }
    /// Checked when read: no dimension above `maxImageSide`, and the bytes hold every element.
    public private(set) var shape: [Int]
    public private(set) var type: ElementType
    /// Little-endian, C-order element bytes.
    var bytes: Data

    /// The number of elements, the product of `shape`.
    public let count: Int

    public init(path: String) throws { try self.init(data: try readFile(path), path: path) }

    public init(data: Data, path: String) throws {
        let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
        guard data.count >= 10, Array(data.prefix(6)) == magic else {
            throw FormatError(path, "not a .npy file (bad magic)")
        }
        let major = data[data.startIndex + 6]
        let headerLength: Int, headerStart: Int
        switch major {
        case 1:
            headerLength = Int(data[data.startIndex + 8]) | Int(data[data.startIndex + 9]) << 8
            headerStart = 10
        case 2, 3:
            guard data.count >= 12 else { throw FormatError(path, "truncated .npy header") }
            headerLength = (0..<4).reduce(0) { $0 | Int(data[data.startIndex + 8 + $1]) << (8 * $1) }
            headerStart = 12
        default:
            throw FormatError(path, "unsupported .npy version \(major)")
        }
        guard data.count >= headerStart + headerLength else { throw FormatError(path, "truncated .npy header") }
        let headerStartIndex = data.startIndex + headerStart
        let headerBytes = data.subdata(in: headerStartIndex ..< headerStartIndex + headerLength)
        guard let header = String(data: headerBytes, encoding: major == 3 ? .utf8 : .isoLatin1) else {
            throw FormatError(path, "unreadable .npy header")
        }
        guard let descr = Self.field("descr", in: header), let order = Self.field("fortran_order", in: header),
              let shapeText = Self.field("shape", in: header) else {
            throw FormatError(path, "malformed .npy header: \(header.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        let dims = shapeText.trimmingCharacters(in: CharacterSet(charactersIn: "()[] "))
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        var shape: [Int] = []
        for d in dims {
            guard let v = Int(d), v >= 0 else { throw FormatError(path, "malformed .npy shape \(shapeText)") }
            shape.append(v)
        }
        // Every .npy this program reads is an image or a mask (or a stack of them).
        if let side = shape.first(where: { $0 > maxImageSide }) {
            throw FormatError(path, ".npy shape \(shape) has a dimension of \(side), above the largest image side "
                              + "\(maxImageSide)")
        }
        let quoted = descr.trimmingCharacters(in: CharacterSet(charactersIn: "'\" "))
        guard let kindChar = quoted.dropFirst().first, let size = Int(quoted.dropFirst(2)) else {
            throw FormatError(path, "unsupported .npy dtype \(descr)")
        }
        let endian = quoted.first!
        let type: ElementType
        switch (kindChar, size) {
        case ("f", 2): type = .float16
        case ("f", 4): type = .float32
        case ("f", 8): type = .float64
        case ("i", 1), ("i", 2), ("i", 4), ("i", 8): type = .int(bytes: size, signed: true)
        case ("u", 1), ("u", 2), ("u", 4), ("u", 8): type = .int(bytes: size, signed: false)
        case ("b", 1): type = .bool
        default: throw FormatError(path, "unsupported .npy dtype \(quoted) (numeric arrays only)")
        }
        guard "<>|=".contains(endian) else { throw FormatError(path, "unsupported .npy dtype \(quoted)") }
        let start = data.startIndex + headerStart + headerLength
        guard let total = checkedByteCount(shape, elementSize: size) else {
            throw FormatError(path, ".npy shape \(shape) \(quoted) is too large (its size overflows 64 bits)")
        }
        guard data.endIndex - start >= total else {
            throw FormatError(path, "truncated .npy data: \(shape) \(quoted) needs \(total) bytes, file has "
                              + "\(data.endIndex - start)")
        }
        let count = total / size
        var bytes = data.subdata(in: start ..< start + total)
        if endian == ">" && size > 1 {
            bytes.withUnsafeMutableBytes { raw in
                for i in 0..<count {
                    let p = raw.baseAddress! + i * size
                    for j in 0..<size / 2 { let t = p.load(fromByteOffset: j, as: UInt8.self)
                        p.storeBytes(of: p.load(fromByteOffset: size - 1 - j, as: UInt8.self), toByteOffset: j,
                                     as: UInt8.self)
                        p.storeBytes(of: t, toByteOffset: size - 1 - j, as: UInt8.self) }
                }
            }
        }
        self.shape = shape
        self.type = type
        self.bytes = bytes
        self.count = count
        if order.trimmingCharacters(in: .whitespaces) == "True" && shape.count > 1 {
            self.bytes = Self.fortranToC(bytes, shape: shape, elementSize: size)
        }
    }

    public init(float32 values: [Float], shape: [Int]) {
        precondition(checkedProduct(shape) == values.count, "\(values.count) values for shape \(shape)")
        self.shape = shape; type = .float32; count = values.count
        bytes = values.withUnsafeBytes { Data($0) }
    }

    public init(uint8 values: [UInt8], shape: [Int]) {
        precondition(checkedProduct(shape) == values.count, "\(values.count) values for shape \(shape)")
        self.shape = shape; type = .int(bytes: 1, signed: false); count = values.count
        bytes = Data(values)
    }

    /// The value of `key` in the header's Python dict literal.
    private static func field(_ key: String, in header: String) -> String? {
        guard let k = header.range(of: "'\(key)'") ?? header.range(of: "\"\(key)\""),
              let colon = header[k.upperBound...].firstIndex(of: ":") else { return nil }
        var rest = header[header.index(after: colon)...].drop(while: { $0 == " " })
        if rest.first == "(" || rest.first == "[" {
            let close: Character = rest.first == "(" ? ")" : "]"
            guard let end = rest.firstIndex(of: close) else { return nil }
            return String(rest[...end])
        }
        if rest.first == "'" || rest.first == "\"" {
            let q = rest.removeFirst()
            guard let end = rest.firstIndex(of: q) else { return nil }
            return "'" + rest[..<end] + "'"
        }
        let end = rest.firstIndex(where: { $0 == "," || $0 == "}" }) ?? rest.endIndex
        return String(rest[..<end])
    }

    /// `shape` has passed `checkedProduct`, so its strides cannot overflow.
    private static func fortranToC(_ bytes: Data, shape: [Int], elementSize: Int) -> Data {
        let count = bytes.count / elementSize
        var out = Data(count: bytes.count)
        var fStrides = [Int](repeating: 1, count: shape.count)
        for i in 1..<shape.count { fStrides[i] = fStrides[i - 1] * shape[i - 1] }
        bytes.withUnsafeBytes { src in
            out.withUnsafeMutableBytes { dst in
                var index = [Int](repeating: 0, count: shape.count)
                for c in 0..<count {
                    var f = 0
                    for d in 0..<shape.count { f += index[d] * fStrides[d] }
                    (dst.baseAddress! + c * elementSize).copyMemory(from: src.baseAddress! + f * elementSize,
                                                                    byteCount: elementSize)
                    var d = shape.count - 1
                    while d >= 0 { index[d] += 1; if index[d] < shape[d] { break }; index[d] = 0; d -= 1 }
                }
            }
        }
        return out
    }

    /// Element i as a Double, whatever the stored type.
    @inline(__always)
    private func value(_ raw: UnsafeRawBufferPointer, _ i: Int) -> Double {
        switch type {
        case .float32: return Double(raw.loadUnaligned(fromByteOffset: i * 4, as: Float.self))
        case .float64: return raw.loadUnaligned(fromByteOffset: i * 8, as: Double.self)
        case .float16: return Double(Float(float16Bits: raw.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self)))
        case .bool: return raw[i] != 0 ? 1 : 0
        case .int(let n, let signed):
            switch (n, signed) {
            case (1, true): return Double(raw.loadUnaligned(fromByteOffset: i, as: Int8.self))
            case (1, false): return Double(raw[i])
            case (2, true): return Double(raw.loadUnaligned(fromByteOffset: i * 2, as: Int16.self))
            case (2, false): return Double(raw.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
            case (4, true): return Double(raw.loadUnaligned(fromByteOffset: i * 4, as: Int32.self))
            case (4, false): return Double(raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self))
            case (8, true): return Double(raw.loadUnaligned(fromByteOffset: i * 8, as: Int64.self))
            default: return Double(raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self))
            }
        }
    }

    /// The values as Float32, written to `out` (count elements).
    public func copyFloats(to out: UnsafeMutablePointer<Float>) {
        bytes.withUnsafeBytes { raw in
            if type == .float32 { out.update(from: raw.bindMemory(to: Float.self).baseAddress!, count: count); return }
            for i in 0..<count { out[i] = Float(value(raw, i)) }
        }
    }

    public func floats() -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buf, n in copyFloats(to: buf.baseAddress!); n = count }
    }

    /// Class labels: integer (or integral float) values in 0..<classes, else the first bad value.
    public func labels(classes: Int, path: String) throws -> [UInt8] {
        try bytes.withUnsafeBytes { raw in
            var out = [UInt8](repeating: 0, count: count)
            for i in 0..<count {
                let v = value(raw, i)
                guard v >= 0, v < Double(classes), v == v.rounded() else {
                    throw FormatError(path, "mask value \(v) at element \(i) is not a class in 0..\(classes - 1)")
                }
                out[i] = UInt8(v)
            }
            return out
        }
    }

    public var isFloatingPoint: Bool { [.float16, .float32, .float64].contains(type) }

    /// The .npy file for this array (format version 1.0).
    public func encoded() -> Data {
        let descr: String
        switch type {
        case .float16: descr = "<f2"
        case .float32: descr = "<f4"
        case .float64: descr = "<f8"
        case .bool: descr = "|b1"
        case .int(let n, let signed): descr = (n == 1 ? "|" : "<") + (signed ? "i" : "u") + "\(n)"
        }
        let dims = shape.count == 1 ? "(\(shape[0]),)" : "(" + shape.map(String.init).joined(separator: ", ") + ")"
        var header = "{'descr': '\(descr)', 'fortran_order': False, 'shape': \(dims), }"
        let unpadded = 10 + header.utf8.count + 1
        header += String(repeating: " ", count: (64 - unpadded % 64) % 64) + "\n"
        var out = Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0])
        let n = header.utf8.count
        out.append(contentsOf: [UInt8(n & 0xFF), UInt8(n >> 8)])
        out.append(header.data(using: .ascii)!)
        out.append(bytes)
        return out
    }
}

extension Float {
    /// IEEE half-precision bits to Float.
    public init(float16Bits h: UInt16) {
        let sign = UInt32(h >> 15) << 31
        let exp = Int((h >> 10) & 0x1F), frac = UInt32(h & 0x3FF)
        if exp == 0 {
            let v = Float(frac) * Float(sign: .plus, exponent: -24, significand: 1)
            self = sign != 0 ? -v : v
        } else if exp == 31 {
            self = Float(bitPattern: sign | 0x7F80_0000 | (frac << 13))
        } else {
            self = Float(bitPattern: sign | UInt32(exp - 15 + 127) << 23 | (frac << 13))
        }
    }
}
