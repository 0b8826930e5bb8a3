import CZlib
import Foundation

/// Whether `data` starts like a gzip stream (magic 1f 8b), whatever the file is called.
public func isGzip(_ data: Data) -> Bool {
    data.count >= 2 && data[data.startIndex] == 0x1F && data[data.startIndex + 1] == 0x8B
}

/// gzip-compresses `data` (one member, zlib's default level).
public func gzipCompress(_ data: Data) throws -> Data {
    var z = z_stream()
    // windowBits 15 + 16: a gzip wrapper instead of zlib's own.
    guard deflateInit2_(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, MAX_WBITS + 16, 8, Z_DEFAULT_STRATEGY,
                        zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
        throw FormatError("gzip", "zlib could not start a compressor")
    }
    defer { deflateEnd(&z) }
    var out = [UInt8](repeating: 0, count: Int(deflateBound(&z, uLong(data.count))) + 64)
    let status: Int32 = data.withUnsafeBytes { src in
        out.withUnsafeMutableBytes { dst in
            z.next_in = UnsafeMutablePointer(mutating: src.bindMemory(to: Bytef.self).baseAddress)
            z.avail_in = uInt(src.count)
            z.next_out = dst.bindMemory(to: Bytef.self).baseAddress
            z.avail_out = uInt(dst.count)
            return deflate(&z, Z_FINISH)
        }
    }
    guard status == Z_STREAM_END else { throw FormatError("gzip", "zlib could not compress (status \(status))") }
    return Data(out.prefix(Int(z.total_out)))
}

/// Streaming gunzip over an in-memory .gz file. Output is produced only as far as the caller asks,
/// in bounded chunks, so a corrupt header that claims gigabytes costs no more memory than the
/// stream really holds.
final class Gunzip {
    private var z = z_stream()
    private let input: UnsafeMutableRawBufferPointer
    private let path: String
    private var ended = false

    init(_ data: Data, path: String) throws {
        self.path = path
        guard data.count < Int(UInt32.max) else { throw FormatError(path, "gzip file too large (4 GiB or more)") }
        // zlib keeps a pointer into the input between calls, so the bytes need a stable home.
        input = .allocate(byteCount: max(data.count, 1), alignment: 1)
        data.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: input[0..<data.count]))
        z.next_in = input.baseAddress!.assumingMemoryBound(to: Bytef.self)
        z.avail_in = uInt(data.count)
        // windowBits 15 + 16: expect the gzip wrapper and check its CRC and length.
        guard inflateInit2_(&z, MAX_WBITS + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            input.deallocate()
            throw FormatError(path, "zlib could not start a decompressor")
        }
    }

    deinit {
        inflateEnd(&z)
        input.deallocate()
    }

    /// Appends up to `count` more bytes to `out`: fewer only where the stream ends.
    func read(_ count: Int, into out: inout [UInt8]) throws {
        var remaining = count
        while remaining > 0 && !ended {
            let chunk = min(remaining, 4 << 20)
            let before = out.count
            out.append(contentsOf: repeatElement(0, count: chunk))
            let produced = try out.withUnsafeMutableBytes { raw in
                try inflateSome(into: raw.baseAddress! + before, capacity: chunk)
            }
            out.removeLast(chunk - produced)
            remaining -= produced
        }
    }

    /// Inflates the rest of the stream into a scratch buffer, so that a truncated or corrupt tail
    /// (or a wrong CRC) is reported even when the caller already has every byte it needs.
    func verifyRest() throws {
        var scratch = [UInt8](repeating: 0, count: 1 << 16)
        while !ended {
            _ = try scratch.withUnsafeMutableBytes { try inflateSome(into: $0.baseAddress!, capacity: $0.count) }
        }
    }

    /// One round of inflate: fills up to `capacity` bytes, returns how many it wrote.
    private func inflateSome(into dst: UnsafeMutableRawPointer, capacity: Int) throws -> Int {
        var written = 0
        while written < capacity && !ended {
            z.next_out = (dst + written).assumingMemoryBound(to: Bytef.self)
            z.avail_out = uInt(capacity - written)
            let status = inflate(&z, Z_NO_FLUSH)
            written = capacity - Int(z.avail_out)
            switch status {
            case Z_OK:
                continue
            case Z_STREAM_END:
                // A file may hold several gzip members (like `cat a.gz b.gz`); anything else after
                // the first member is trailing padding, ignored as gzip itself does.
                if z.avail_in >= 2 && z.next_in[0] == 0x1F && z.next_in[1] == 0x8B {
                    inflateReset(&z)
                } else {
                    ended = true
                }
            case Z_BUF_ERROR where z.avail_in == 0:
                throw FormatError(path, "truncated gzip stream")
            default:
                let reason = z.msg.map { String(cString: $0) } ?? "status \(status)"
                throw FormatError(path, "corrupt gzip data (\(reason))")
            }
        }
        return written
    }
}
