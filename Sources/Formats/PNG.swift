import CZlib
import Foundation

/// An 8-bit RGB image, row-major.
public struct RGBImage {
    public let width: Int, height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, fill: (UInt8, UInt8, UInt8) = (255, 255, 255)) {
        self.width = width; self.height = height
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) { pixels[3 * i] = fill.0; pixels[3 * i + 1] = fill.1; pixels[3 * i + 2] = fill.2 }
    }

    @inline(__always)
    public mutating func set(_ x: Int, _ y: Int, _ c: (UInt8, UInt8, UInt8)) {
        guard x >= 0, y >= 0, x < width, y < height else { return }
        let i = 3 * (y * width + x)
        pixels[i] = c.0; pixels[i + 1] = c.1; pixels[i + 2] = c.2
    }

    public func get(_ x: Int, _ y: Int) -> (UInt8, UInt8, UInt8) {
        let i = 3 * (y * width + x)
        return (pixels[i], pixels[i + 1], pixels[i + 2])
    }

    /// Copies `other` with its top-left corner at (x, y).
    public mutating func draw(_ other: RGBImage, at x: Int, _ y: Int) {
        for yy in 0..<other.height { for xx in 0..<other.width { set(x + xx, y + yy, other.get(xx, yy)) } }
    }

    /// The PNG file: signature, IHDR, one zlib-compressed IDAT (filter 0 rows), IEND, each chunk
    /// with its CRC-32.
    public func pngData() -> Data {
        var out = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        var header = Data()
        header.appendBigEndian(UInt32(width)); header.appendBigEndian(UInt32(height))
        header.append(contentsOf: [8, 2, 0, 0, 0])  // 8-bit, truecolor, deflate, no filter, no interlace
        out.appendChunk("IHDR", header)
        var raw = [UInt8](); raw.reserveCapacity(height * (1 + 3 * width))
        for y in 0..<height {
            raw.append(0)
            raw.append(contentsOf: pixels[(3 * y * width)..<(3 * (y + 1) * width)])
        }
        out.appendChunk("IDAT", deflate(raw))
        out.appendChunk("IEND", Data())
        return out
    }
}

/// zlib stream of `bytes` at the default level.
public func deflate(_ bytes: [UInt8]) -> Data {
    var size = compressBound(uLong(bytes.count))
    var out = [UInt8](repeating: 0, count: Int(size))
    let status = compress2(&out, &size, bytes, uLong(bytes.count), Z_DEFAULT_COMPRESSION)
    precondition(status == Z_OK, "zlib compress2 failed: \(status)")
    return Data(out.prefix(Int(size)))
}

extension Data {
    mutating func appendBigEndian(_ v: UInt32) {
        append(contentsOf: [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)])
    }

    mutating func appendChunk(_ type: String, _ body: Data) {
        appendBigEndian(UInt32(body.count))
        let typed = Data(type.utf8) + body
        append(typed)
        let crc = typed.withUnsafeBytes { crc32(0, $0.bindMemory(to: Bytef.self).baseAddress, uInt($0.count)) }
        appendBigEndian(UInt32(crc))
    }
}
