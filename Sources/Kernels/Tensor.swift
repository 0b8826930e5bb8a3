/// A growable Float32 buffer holding one NCHW tensor.
///
/// Storage only grows: a smaller batch (the last partial batch of an epoch) reuses the
/// allocation, so the training loop allocates nothing after its first step.
public final class Tensor {
    public private(set) var data: UnsafeMutablePointer<Float>
    public private(set) var capacity = 0
    public private(set) var shape: Shape

    public init(_ shape: Shape = Shape(0, 0, 0, 0)) {
        self.shape = shape
        data = .allocate(capacity: 1)
        grow(&data, &capacity, to: max(shape.count, 1))
    }

    deinit { data.deallocate() }

    public var count: Int { shape.count }

    /// Gives the tensor a new shape, growing the storage if needed. Contents are unspecified.
    public func reshape(_ newShape: Shape) {
        grow(&data, &capacity, to: newShape.count)
        shape = newShape
    }

    public func zero() { data.update(repeating: 0, count: count) }

    public var buffer: UnsafeMutableBufferPointer<Float> { UnsafeMutableBufferPointer(start: data, count: count) }

    public func toArray() -> [Float] { Array(buffer) }
}

/// A growable buffer of bf16 upper halves holding one NCHW tensor: the values of a float32
/// tensor whose only readers round it to bf16 (`cbf16_round`), in half its memory. Grows as
/// `Tensor` does.
public final class HalfTensor {
    public private(set) var data: UnsafeMutablePointer<UInt16>
    public private(set) var capacity = 0
    public private(set) var shape = Shape(0, 0, 0, 0)

    public init() {
        data = .allocate(capacity: 1)
        grow(&data, &capacity, to: 1)
    }

    deinit { data.deallocate() }

    public var count: Int { shape.count }

    /// Gives the tensor a new shape, growing the storage if needed. Contents are unspecified.
    public func reshape(_ newShape: Shape) {
        grow(&data, &capacity, to: newShape.count)
        shape = newShape
    }
}

/// Storage of `count` zeroed elements in place of `data` where it holds fewer (`capacity`);
/// never smaller.
private func grow<T: Numeric>(_ data: inout UnsafeMutablePointer<T>, _ capacity: inout Int, to count: Int) {
    guard count > capacity else { return }
    data.deallocate()
    capacity = count
    data = .allocate(capacity: count)
    data.initialize(repeating: 0, count: count)
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
