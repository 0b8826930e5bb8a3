import Formats
import XCTest

/// Conv biases that a training-mode BatchNorm follows: the normalization removes them, so their
/// gradient is exactly zero and only rounding moves them.
public func isBiasBeforeBatchNorm(_ name: String) -> Bool {
    name.hasSuffix(".0.bias") && !name.contains("upsample")
}

/// The acceptance rule for one optimizer step taken two ways from the same start: every weight
/// and BN buffer moves the same within 1e-2 of the update's norm (the float32 floor), the
/// exact-zero-gradient biases by at most 1e-4 x lr per element, and BN counters agree.
public func assertSameUpdate(from start: SafeTensors, expected: SafeTensors, actual: SafeTensors, lr: Float,
                             file: StaticString = #filePath, line: UInt = #line) throws {
    var compared = 0
    for name in start.names where !name.hasPrefix("optimizer.") {
        if name.hasSuffix("num_batches_tracked") {
            XCTAssertEqual(try actual.int64s(name), try expected.int64s(name), name, file: file, line: line)
            continue
        }
        let s = try start.floats(name)
        let a = zip(try actual.floats(name), s).map { Double($0) - Double($1) }
        let e = zip(try expected.floats(name), s).map { Double($0) - Double($1) }
        if isBiasBeforeBatchNorm(name) {
            XCTAssertLessThanOrEqual(a.map(abs).max() ?? 0, 1e-4 * Double(lr), name, file: file, line: line)
        } else {
            let d = zip(a, e).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
            XCTAssertLessThanOrEqual(d, 1e-2 * norm(e), "\(name): |difference| \(d), |update| \(norm(e))", file: file, line: line)
        }
        compared += 1
    }
    XCTAssertGreaterThan(compared, 0, file: file, line: line)
}
