import Foundation
#if canImport(Glibc)
import Glibc

public struct FileEventsError: Error { public let call: String, errno: Int32 }

/// inotify on a few directories: lets a fault test act the moment a process opens a file or
/// creates one (a rank starting to read test images, rank 0 starting a checkpoint), which no
/// sleep can hit reliably.
public final class FileEvents {
    private let fd: Int32
    private var watches: [Int32: String] = [:]
    private var pending: [(directory: String, name: String, mask: UInt32)] = []

    public init(_ directories: [String], mask: UInt32) throws {
        fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        guard fd >= 0 else { throw FileEventsError(call: "inotify_init1", errno: errno) }
        for d in directories {
            let w = inotify_add_watch(fd, d, mask)
            guard w >= 0 else { let e = errno; close(fd); throw FileEventsError(call: "inotify_add_watch " + d, errno: e) }
            watches[w] = d
        }
    }

    deinit { close(fd) }

    /// The first event (from now, or queued) whose file name satisfies `match`, as the file's
    /// path; nil after `timeout` seconds.
    public func next(timeout: TimeInterval, where match: (String, UInt32) -> Bool) -> String? {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            while !pending.isEmpty {
                let e = pending.removeFirst()
                if match(e.name, e.mask) { return e.directory + "/" + e.name }
            }
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { return nil }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, Int32(min(left, 1) * 1000)) <= 0 { continue }
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress!, $0.count) }
            guard n > 0 else { continue }
            buffer.withUnsafeBytes { raw in
                var offset = 0
                let header = MemoryLayout<inotify_event>.size
                while offset + header <= n {
                    let wd = raw.load(fromByteOffset: offset, as: Int32.self)
                    let mask = raw.load(fromByteOffset: offset + 4, as: UInt32.self)
                    let length = Int(raw.load(fromByteOffset: offset + 12, as: UInt32.self))
                    let nameBytes = raw[(offset + header)..<(offset + header + length)].prefix { $0 != 0 }
                    pending.append((watches[wd] ?? "", String(decoding: nameBytes, as: UTF8.self), mask))
                    offset += header + length
                }
            }
        }
    }
}
#endif
