import Foundation

/// Memory that tensors whose lives never overlap take turns in (`Tensor.init(in:)`), or one
/// tensor's own. It only grows, keeping what it holds: a tensor placed further in may grow it
/// while one placed before it is still to be read.
public final class Storage {
    public private(set) var base: UnsafeMutableRawPointer
    public private(set) var byteCount = 0

    public init() { base = Storage.reallocate(nil, 1) }
    deinit { free(base) }

    /// At least `bytes` bytes; what grows is zeroed.
    func reserve(_ bytes: Int) {
        guard bytes > byteCount else { return }
        // realloc keeps the contents, and glibc moves a large block by remapping its pages: the
        // old and the new block are never resident together, as a copy would have them.
        base = Storage.reallocate(base, bytes)
        (base + byteCount).initializeMemory(as: UInt8.self, repeating: 0, count: bytes - byteCount)
        byteCount = bytes
    }

    private static func reallocate(_ p: UnsafeMutableRawPointer?, _ bytes: Int) -> UnsafeMutableRawPointer {
        guard let grown = realloc(p, bytes) else { fatalError("cannot allocate \(bytes) bytes") }
        return grown
    }

    /// Where a tensor placed at `offset` starts: rounded up to 64 bytes, one cache line.
    static func aligned(_ offset: Int) -> Int { (offset + 63) / 64 * 64 }
}

/// A growable Float32 buffer holding one NCHW tensor.
///
/// Storage only grows: a smaller batch (the last partial batch of an epoch) reuses the
/// allocation, so the training loop allocates nothing after its first step.
public final class Tensor {
    /// Where the elements live, from `offset` bytes on.
    public private(set) var storage: Storage
    private var offset = 0
    public private(set) var shape: Shape

    /// A tensor in its own storage, or from the start of `storage`, which others share.
    public init(_ shape: Shape = Shape(0, 0, 0, 0), in storage: Storage = Storage()) {
        self.shape = shape
        self.storage = storage
        storage.reserve(max(shape.count, 1) * MemoryLayout<Float>.stride)
    }

    public var data: UnsafeMutablePointer<Float> {
        (storage.base + offset).bindMemory(to: Float.self, capacity: shape.count)
    }

    public var count: Int { shape.count }

    /// Gives the tensor a new shape, growing the storage if needed. Contents are unspecified.
    public func reshape(_ newShape: Shape) {
        storage.reserve(offset + newShape.count * MemoryLayout<Float>.stride)
        shape = newShape
    }

    /// Moves the elements to `storage` from byte `offset` on (rounded up to its alignment), where
    /// other tensors whose lives never overlap with this one's may lie. Contents are unspecified.
    public func place(in storage: Storage, at offset: Int = 0) {
        self.storage = storage
        self.offset = Storage.aligned(offset)
        if shape.count > 0 { reshape(shape) }
    }

    public func zero() { data.update(repeating: 0, count: count) }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: data, count: count) }

    public func toArray() -> [Float] { Array(buffer) }
}

/// A growable buffer of bf16 upper halves holding one NCHW tensor: the values of a float32
/// tensor whose only readers round it to bf16 (`cbf16_round`), in half its memory. Grows and
/// shares storage as `Tensor` does.
public final class HalfTensor {
    public private(set) var storage: Storage
    private var offset = 0
    public private(set) var shape = Shape(0, 0, 0, 0)

    public init(in storage: Storage = Storage()) { self.storage = storage }

    public var data: UnsafeMutablePointer<UInt16> {
        (storage.base + offset).bindMemory(to: UInt16.self, capacity: shape.count)
    }

    public var count: Int { shape.count }

    /// The halves two by two as 32-bit words: paired planes (`batchNormTrainOutputPairs`).
    public var words: UnsafeMutablePointer<UInt32> {
        (storage.base + offset).bindMemory(to: UInt32.self, capacity: shape.count / 2)
    }

    /// Gives the tensor a new shape, growing the storage if needed. Contents are unspecified.
    public func reshape(_ newShape: Shape) {
        storage.reserve(offset + newShape.count * MemoryLayout<UInt16>.stride)
        shape = newShape
    }

    /// As `Tensor.place(in:at:)`.
    public func place(in storage: Storage, at offset: Int = 0) {
        self.storage = storage
        self.offset = Storage.aligned(offset)
        if shape.count > 0 { reshape(shape) }
    }
}

/// NCHW dimensions.
public struct Shape: Equatable, CustomStringConvertible {
    public var n: Int, c: Int, h: Int, w: Int
    public init(_ n: Int, _ c: Int, _ h: Int, _ w: Int) { self.n = n; self.c = c; self.h = h; self.w = w }
    public var count: Int { n * c * h * w }
    public var spatial: Int { h * w }
    public var description: String { "[\(n), \(c), \(h), \(w)]" }
}

/// A reusable scratch area (im2col columns and the like), grown to the largest request.
public final class Workspace {
    private var storage: UnsafeMutablePointer<Float>
    private var capacity: Int

    public init() { capacity = 1; storage = .allocate(capacity: 1) }
    deinit { storage.deallocate() }

    public func floats(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count > capacity {
            storage.deallocate()
            capacity = count
            storage = .allocate(capacity: count)
        }
        return storage
    }
}
