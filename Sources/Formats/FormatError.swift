import Foundation

/// A problem with one input file, phrased for the user: "PATH: what is wrong".
public struct FormatError: Error, CustomStringConvertible, Equatable {
    public var path: String
    public var problem: String
    public init(_ path: String, _ problem: String) { self.path = path; self.problem = problem }
    public var description: String { "\(path): \(problem)" }
}

/// Reads a whole file, turning the OS's refusal into a FormatError.
public func readFile(_ path: String) throws -> Data {
    guard FileManager.default.fileExists(atPath: path) else { throw FormatError(path, "no such file") }
    guard let data = FileManager.default.contents(atPath: path) else { throw FormatError(path, "cannot be read") }
    return data
}

/// Writes a file so that it is either wholly there or not changed at all: a temporary file in the
/// same directory, flushed to disk, then renamed over the target.
public func writeFileAtomically(_ data: Data, to path: String) throws {
    let url = URL(fileURLWithPath: path)
    let dir = url.deletingLastPathComponent().path
    let tmp = dir + "/." + url.lastPathComponent + ".tmp-\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { throw FormatError(path, "cannot write: \(String(cString: strerror(errno)))") }
    // The errno of the first call that failed: a full disk (ENOSPC), `ulimit -f` (EFBIG, with
    // SIGXFSZ ignored) or an I/O error may show at write, fsync or close.
    var failure: Int32 = 0
    data.withUnsafeBytes { raw in
        var offset = 0
        while offset < raw.count {
            let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { failure = n < 0 ? errno : EIO; break }
            offset += n
        }
    }
    if failure == 0 && fsync(fd) != 0 { failure = errno }
    if close(fd) != 0 && failure == 0 { failure = errno }
    if failure == 0 && rename(tmp, path) != 0 { failure = errno }
    guard failure == 0 else {
        unlink(tmp)
        throw FormatError(path, "cannot write: \(String(cString: strerror(failure)))")
    }
    // Make the rename itself durable.
    let dfd = open(dir.isEmpty ? "." : dir, O_RDONLY)
    if dfd >= 0 { fsync(dfd); close(dfd) }
}

/// JSON string literal for `s` (quotes included).
public func jsonQuote(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if u.value < 0x20 { out += String(format: "\\u%04x", u.value) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}
