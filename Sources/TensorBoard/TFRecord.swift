import Foundation

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TFRecord framing.
public enum CRC32C {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    public static func checksum<Bytes: Collection>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }

    /// TFRecord stores this rotated and offset form, so that a CRC over data that itself holds
    /// CRCs stays well distributed.
    public static func masked<Bytes: Collection>(_ bytes: Bytes) -> UInt32 where Bytes.Element == UInt8 {
        let c = checksum(bytes)
        return ((c >> 15) | (c << 17)) &+ 0xA282_EAD8
    }
}

/// TFRecord framing, the container of TensorBoard's event files: each record is its length
/// (uint64, little-endian), the masked CRC-32C of those 8 bytes, the data, the masked CRC-32C
/// of the data.
public enum TFRecord {
    public static func frame(_ data: [UInt8]) -> [UInt8] {
        let length = littleEndian(UInt64(data.count))
        return length + littleEndian(CRC32C.masked(length)) + data + littleEndian(CRC32C.masked(data))
    }

    /// The records of `bytes` from the start, as long as they are whole and their checksums hold:
    /// each record's data and the offset just past it. A file cut short by a crash ends where
    /// its last whole record ends.
    public static func records(_ bytes: [UInt8]) -> [(data: ArraySlice<UInt8>, end: Int)] {
        var result: [(data: ArraySlice<UInt8>, end: Int)] = []
        var offset = 0
        while bytes.count - offset >= 12 {
            let header = bytes[offset..<offset + 8]
            guard readUInt32(bytes, offset + 8) == CRC32C.masked(header) else { break }
            let length = header.reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            // Room for the data and its CRC after the 12-byte header.
            guard bytes.count - offset >= 16, length <= UInt64(bytes.count - offset - 16) else { break }
            let start = offset + 12, end = start + Int(length)
            let data = bytes[start..<end]
            guard readUInt32(bytes, end) == CRC32C.masked(data) else { break }
            offset = end + 4
            result.append((data, offset))
        }
        return result
    }

    static func littleEndian<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
        (0..<T.bitWidth / 8).map { UInt8(truncatingIfNeeded: v >> ($0 * 8)) }
    }

    static func readUInt32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << ($1 * 8) }
    }
}
