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

/// PyTorch's own float32 error on every tensor of the seed's UNet in one recorded SGD step
/// (torch_sgd_step.safetensors: torch_trained, lr 10, seeddata pairs 0-3 in one batch of 4),
/// relative to the step: ||torch f32 update - torch f64 update|| / ||torch f64 update||, for
/// every parameter and BatchNorm buffer (running_mean, running_var) whose float64 update is not
/// zero. The conv biases before a BatchNorm have none: their float64 update is zero.
public func torchFloat32RelativeErrors() throws -> [String: Double] {
    let fx = try Fixture("torch_sgd_step.safetensors")
    var result: [String: Double] = [:]
    for name in fx.file.names where name.hasPrefix("update64.") {
        let key = String(name.dropFirst("update64.".count)), n = norm(try fx.doubles(name))
        if n > 0 { result[key] = try fx.doubles("dist." + name)[0] / n }
    }
    return result
}

/// The project's tolerance rule (`Fixture.assertMatchesTorch`: no further from the reference than
/// ten times PyTorch float32's own distance from float64, plus 1e-6 of the reference's norm)
/// applied to a change of the model taken two ways from the same start (one run on N ranks
/// against one on 1 rank, a resumed run against a straight one), per tensor and norm-wise.
/// For every parameter and every BatchNorm buffer t of `expected` (running_mean and running_var
/// included; optimizer state not), with u = expected - start and v = actual - start computed in
/// Float64 from the float32 states:
///
///     ||v - u|| <= (10 * r_t + 1e-6) * ||u||
///
/// where r_t is PyTorch float32's relative error on that tensor's update in the recorded step
/// (`torchFloat32RelativeErrors`). On that very step r_t * ||u|| is PyTorch float32's distance
/// itself, so the bound is the fixture rule with `expected` standing in for float64; on other
/// steps it is the same relative error at this change's size. The conv biases before a BatchNorm
/// have an exactly zero gradient and no relative error: they may move by at most 1e-4 x lr per
/// element (rounding only). BatchNorm counters must be equal. A tensor without an r_t fails.
/// `buffers: false` where the states compared hold the parameters only (one rank accumulating
/// micro-batches updates the running statistics once per micro-batch, K ranks once each).
public func assertSameChangeWithinFloat32(from start: SafeTensors, expected: SafeTensors, actual: SafeTensors,
                                          relativeErrors r: [String: Double], lr: Float, what: String, buffers: Bool = true,
                                          file: StaticString = #filePath, line: UInt = #line) throws {
    var compared: Set<String> = []
    for name in expected.names where !name.hasPrefix("optimizer.") {
        if name.hasSuffix("num_batches_tracked") {
            XCTAssertEqual(try actual.int64s(name), try expected.int64s(name), "\(what): \(name)", file: file, line: line)
            compared.insert(name)
            continue
        }
        let s = try start.floats(name)
        let a = zip(try actual.floats(name), s).map { Double($0) - Double($1) }
        let e = zip(try expected.floats(name), s).map { Double($0) - Double($1) }
        XCTAssertEqual(a.count, s.count, "\(what): \(name): element count", file: file, line: line)
        if isBiasBeforeBatchNorm(name) {
            XCTAssertLessThanOrEqual(a.map(abs).max() ?? 0, 1e-4 * Double(lr), "\(what): \(name)", file: file, line: line)
        } else if let rt = r[name] {
            let d = zip(a, e).reduce(0) { $0 + ($1.0 - $1.1) * ($1.0 - $1.1) }.squareRoot()
            let tolerance = (10 * rt + 1e-6) * norm(e)
            XCTAssertLessThanOrEqual(d, tolerance, "\(what): \(name): |difference| \(d), |update| \(norm(e)), "
                                     + "torch f32 relative error \(rt)", file: file, line: line)
        } else {
            XCTFail("\(what): \(name): no float32 error recorded for it", file: file, line: line)
        }
        compared.insert(name)
    }
    // Every tensor the start holds was compared, the BatchNorm buffers among them.
    XCTAssertEqual(compared, Set(start.names.filter { !$0.hasPrefix("optimizer.") }), what, file: file, line: line)
    if buffers {
        XCTAssertGreaterThan(compared.filter { $0.hasSuffix(".running_var") || $0.hasSuffix(".running_mean") }.count, 0,
                             what, file: file, line: line)
    }
}
