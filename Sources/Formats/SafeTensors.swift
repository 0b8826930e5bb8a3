import Foundation

/// A safetensors file: an 8-byte little-endian header length, a JSON header naming each tensor's
/// dtype, shape and byte range, then the raw little-endian data.
public struct SafeTensors {
    public struct Entry {
        public var dtype: String
        public var shape: [Int]
        public var bytes: Data
        /// The elements its bytes hold: the product of `shape` in a file that was read, checked there.
        public var count: Int { bytes.count / (SafeTensors.elementSize[dtype] ?? 1) }
    }

    public private(set) var entries: [String: Entry] = [:]
    public var metadata: [String: String] = [:]

    public init() {}

    public var names: [String] { entries.keys.sorted() }

    static let elementSize: [String: Int] = ["F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4,
                                             "I16": 2, "I8": 1, "U8": 1, "BOOL": 1, "U16": 2, "U32": 4, "U64": 8]

    public init(path: String) throws { try self.init(data: try readFile(path), path: path) }

    public init(data: Data, path: String) throws {
        guard data.count >= 8 else {
            throw FormatError(path, "not a safetensors file (shorter than its 8-byte header length)")
        }
        let n = data.prefix(8).enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
        guard n <= UInt64(data.count - 8) else {
            throw FormatError(path, "truncated or not a safetensors file (header of \(n) bytes, file of \(data.count))")
        }
        let headerData = data.subdata(in: data.startIndex + 8 ..< data.startIndex + 8 + Int(n))
        guard let json = try? JSONSerialization.jsonObject(with: headerData), let header = json as? [String: Any] else {
            throw FormatError(path, "corrupt safetensors header (not a JSON object)")
        }
        let body = data.startIndex + 8 + Int(n)
        let bodyCount = data.endIndex - body
        var spans: [String: (String, [Int], Int, Int)] = [:]
        for (name, value) in header {
            if name == "__metadata__" {
                guard let meta = value as? [String: String] else {
                    throw FormatError(path, "corrupt safetensors metadata")
                }
                metadata = meta
                continue
            }
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int],
                  offsets.count == 2 else {
                throw FormatError(path, "corrupt safetensors entry for tensor \(name)")
            }
            guard let size = Self.elementSize[dtype] else {
                throw FormatError(path, "tensor \(name) has unsupported dtype \(dtype)")
            }
            guard shape.allSatisfy({ $0 >= 0 }), offsets[0] >= 0, offsets[0] <= offsets[1] else {
                throw FormatError(path, "tensor \(name) has a bad shape \(shape) or data_offsets \(offsets)")
            }
            guard let bytes = checkedByteCount(shape, elementSize: size) else {
                throw FormatError(path, "tensor \(name): shape \(shape) is too large (its size overflows 64 bits)")
            }
            guard offsets[1] - offsets[0] == bytes else {
                throw FormatError(path,
                                  "tensor \(name): shape \(shape) does not match its \(offsets[1] - offsets[0]) bytes")
            }
            spans[name] = (dtype, shape, offsets[0], offsets[1])
        }
        let needed = spans.values.map(\.3).max() ?? 0
        guard needed <= bodyCount else {
            throw FormatError(path, "truncated: its tensors need \(needed) bytes of data, the file has \(bodyCount)")
        }
        for (name, (dtype, shape, start, end)) in spans {
            entries[name] = Entry(dtype: dtype, shape: shape, bytes: data.subdata(in: body + start ..< body + end))
        }
    }

    public func has(_ name: String) -> Bool { entries[name] != nil }

    public func entry(_ name: String, path: String = "") throws -> Entry {
        guard let e = entries[name] else { throw FormatError(path, "has no tensor \(name)") }
        return e
    }

    /// A floating-point tensor converted to Float32.
    public func floats(_ name: String, path: String = "") throws -> [Float] {
        let e = try entry(name, path: path)
        return try e.bytes.withUnsafeBytes { raw -> [Float] in
            switch e.dtype {
            case "F32": return (0..<e.count).map { raw.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
            case "F64": return (0..<e.count).map { Float(raw.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self)) }
            case "F16":
                return (0..<e.count).map {
                    Float(float16Bits: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self))
                }
            case "BF16":
                return (0..<e.count).map {
                    Float(bitPattern: UInt32(raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)) << 16)
                }
            default: throw FormatError(path, "tensor \(name) is \(e.dtype), expected a floating-point type")
            }
        }
    }

    /// A floating-point tensor as Float64 (fixtures computed in float64 keep their digits).
    public func doubles(_ name: String, path: String = "") throws -> [Double] {
        let e = try entry(name, path: path)
        if e.dtype == "F64" {
            return e.bytes.withUnsafeBytes { raw in
                (0..<e.count).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) }
            }
        }
        return try floats(name, path: path).map(Double.init)
    }

    public func int64s(_ name: String, path: String = "") throws -> [Int64] {
        let e = try entry(name, path: path)
        return try e.bytes.withUnsafeBytes { raw -> [Int64] in
            switch e.dtype {
            case "I64": return (0..<e.count).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self) }
            case "I32": return (0..<e.count).map { Int64(raw.loadUnaligned(fromByteOffset: $0 * 4, as: Int32.self)) }
            default: throw FormatError(path, "tensor \(name) is \(e.dtype), expected an integer type")
            }
        }
    }

    public mutating func set(_ name: String, floats: UnsafeBufferPointer<Float>, shape: [Int]) {
        precondition(floats.count == checkedProduct(shape), "\(name): \(floats.count) values for shape \(shape)")
        entries[name] = Entry(dtype: "F32", shape: shape, bytes: Data(buffer: floats))
    }

    public mutating func set(_ name: String, floats: [Float], shape: [Int]) {
        floats.withUnsafeBufferPointer { set(name, floats: $0, shape: shape) }
    }

    public mutating func set(_ name: String, int64s: [Int64], shape: [Int]) {
        precondition(int64s.count == checkedProduct(shape), "\(name): \(int64s.count) values for shape \(shape)")
        entries[name] = Entry(dtype: "I64", shape: shape, bytes: int64s.withUnsafeBytes { Data($0) })
    }

    /// The file's bytes: tensors in name order, header padded with spaces to 8 bytes (as the
    /// reference implementation does), so equal contents always give equal bytes.
    public func encoded() -> Data {
        var parts: [String] = []
        if !metadata.isEmpty {
            let items = metadata.keys.sorted().map { "\(jsonQuote($0)):\(jsonQuote(metadata[$0]!))" }
            parts.append("\"__metadata__\":{" + items.joined(separator: ",") + "}")
        }
        var offset = 0
        for name in names {
            let e = entries[name]!
            let shape = e.shape.map(String.init).joined(separator: ",")
            parts.append("\(jsonQuote(name)):{\"dtype\":\"\(e.dtype)\",\"shape\":[\(shape)],"
                         + "\"data_offsets\":[\(offset),\(offset + e.bytes.count)]}")
            offset += e.bytes.count
        }
        var header = Array(("{" + parts.joined(separator: ",") + "}").utf8)
        while header.count % 8 != 0 { header.append(0x20) }
        var out = Data(capacity: 8 + header.count + offset)
        var n = UInt64(header.count).littleEndian
        withUnsafeBytes(of: &n) { out.append(contentsOf: $0) }
        out.append(contentsOf: header)
        for name in names { out.append(entries[name]!.bytes) }
        return out
    }
}
