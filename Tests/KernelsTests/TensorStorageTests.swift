import Kernels
import XCTest

/// Tensors whose lives never overlap share one `Storage`: each grows it to what it needs, and a
/// growth keeps what the others placed before it still hold.
final class TensorStorageTests: XCTestCase {
    func testTensorsInOneStorageSeeOneMemory() {
        let a = Tensor(Shape(1, 1, 2, 3))
        let b = Tensor(in: a.storage)
        b.reshape(Shape(1, 1, 1, 6))
        for i in 0..<6 { a.data[i] = Float(i) + 0.5 }
        XCTAssertEqual(b.toArray(), [0.5, 1.5, 2.5, 3.5, 4.5, 5.5])
        XCTAssertEqual(a.storage.byteCount, 24)
    }

    func testGrowingKeepsWhatIsThereAndZeroesTheRest() {
        let a = Tensor(Shape(1, 1, 1, 5))
        for i in 0..<5 { a.data[i] = Float(i + 1) }
        let halves = HalfTensor(in: a.storage)
        halves.place(in: a.storage, at: 5 * 4)
        halves.reshape(Shape(1, 1, 1, 100))
        XCTAssertEqual(a.storage.byteCount, 64 + 200, "grown to what the halves need")
        XCTAssertEqual(a.toArray(), [1, 2, 3, 4, 5], "what the first tensor held is kept")
        XCTAssertEqual(Array(UnsafeBufferPointer(start: halves.data, count: 100)), [UInt16](repeating: 0, count: 100))
        // Placed 20 bytes in, rounded up to the storage's 64-byte alignment.
        XCTAssertEqual(UnsafeMutableRawPointer(halves.data) - a.storage.base, 64)
        let base = a.storage.base
        a.reshape(Shape(1, 1, 1, 3))
        XCTAssertEqual(a.storage.base, base, "never moves for a smaller shape")
        XCTAssertEqual(a.storage.byteCount, 64 + 200, "never shrinks")
    }

    func testPlacingMovesATensorAndGrowsOnlyForWhatItHolds() {
        let shared = Storage()
        let empty = HalfTensor()
        empty.place(in: shared, at: 1000)
        XCTAssertEqual(shared.byteCount, 0, "an empty tensor placed far in reserves nothing")
        let t = Tensor(Shape(1, 2, 2, 2))
        t.place(in: shared, at: 64)
        XCTAssertIdentical(t.storage, shared)
        XCTAssertEqual(shared.byteCount, 64 + 32)
        XCTAssertEqual(UnsafeMutableRawPointer(t.data) - shared.base, 64)
    }
}
