import Foundation
import Formats

/// A picture for TensorBoard's Images tab: PNG bytes and their size.
public struct EventImage {
    public var tag: String
    public var width: Int, height: Int
    public var png: Data
    public init(tag: String, width: Int, height: Int, png: Data) {
        self.tag = tag; self.width = width; self.height = height; self.png = png
    }
}

/// One TensorBoard event file (TFRecord-framed `Event` protobufs), grown by appending.
///
/// Appending, not rewriting: TensorBoard follows a growing event file from the offset it has
/// read, on the file it has open, so a file replaced by a rename would not be followed by a
/// TensorBoard that is already watching; and a rewrite would copy every earlier epoch's
/// pictures again each epoch. Each append is fsynced. A crash can leave only a torn last
/// record, which `start` cuts off before anything more is appended.
public struct EventFile {
    public let path: String
    public init(path: String) { self.path = path }

    /// The first record of every event file, which TensorBoard's reader checks.
    static let fileVersion = "brain.Event:2"

    /// Makes the file hold the events of steps up to `lastStep` and nothing after them: creates
    /// it (with its version record) where it is missing or unreadable, and otherwise cuts off
    /// the later steps (epochs a resumed run trains again, which TensorBoard would show twice)
    /// and any torn record a crash left at the end.
    public func start(keepingStepsThrough lastStep: Int, wallTime: Double = Date().timeIntervalSince1970) throws {
        let old = FileManager.default.contents(atPath: path).map { [UInt8]($0) } ?? []
        var keep = 0
        for record in TFRecord.records(old) {
            guard let event = try? Tensorboard_Event(serializedBytes: Array(record.data)) else { break }
            if keep == 0 && event.fileVersion.isEmpty { break }  // not a file this writer started
            if event.step > lastStep { break }
            keep = record.end
        }
        if keep == 0 {
            var version = Tensorboard_Event()
            version.wallTime = wallTime
            version.fileVersion = Self.fileVersion
            try writeFileAtomically(Data(TFRecord.frame(try version.serializedBytes())), to: path)
        } else if keep < old.count {
            try withDescriptor(O_WRONLY) { fd in ftruncate(fd, off_t(keep)) == 0 }
        }
    }

    /// Appends one event holding `scalars` and `images` at `step`, and makes it durable.
    public func append(step: Int, scalars: [(tag: String, value: Double)], images: [EventImage] = [],
                       wallTime: Double = Date().timeIntervalSince1970) throws {
        var summary = Tensorboard_Summary()
        for (tag, value) in scalars {
            var v = Tensorboard_Summary.Value()
            v.tag = tag
            v.simpleValue = Float(value)
            summary.value.append(v)
        }
        for image in images {
            var picture = Tensorboard_Summary.Image()
            picture.width = Int32(image.width); picture.height = Int32(image.height)
            picture.colorspace = 3
            picture.encodedImageString = image.png
            var v = Tensorboard_Summary.Value()
            v.tag = image.tag
            v.image = picture
            summary.value.append(v)
        }
        var event = Tensorboard_Event()
        event.wallTime = wallTime
        event.step = Int64(step)
        event.summary = summary
        let record = TFRecord.frame(try event.serializedBytes())
        try withDescriptor(O_WRONLY | O_APPEND) { fd in
            record.withUnsafeBytes { raw in
                var offset = 0
                while offset < raw.count {
                    let n = write(fd, raw.baseAddress! + offset, raw.count - offset)
                    if n < 0 && errno == EINTR { continue }
                    if n <= 0 { if n == 0 { errno = EIO }; return false }
                    offset += n
                }
                return true
            }
        }
    }

    /// Opens the file, runs `body` (false: it failed, errno says why), fsyncs and closes it;
    /// throws the first failure's errno.
    func withDescriptor(_ flags: Int32, _ body: (Int32) -> Bool) throws {
        let fd = open(path, flags)
        guard fd >= 0 else { throw FormatError(path, "cannot write: \(String(cString: strerror(errno)))") }
        var failure: Int32 = 0
        if !body(fd) { failure = errno }
        if failure == 0 && fsync(fd) != 0 { failure = errno }
        if close(fd) != 0 && failure == 0 { failure = errno }
        guard failure == 0 else { throw FormatError(path, "cannot write: \(String(cString: strerror(failure)))") }
    }
}
