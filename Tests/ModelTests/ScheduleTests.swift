import Foundation
import Model
import TestSupport
import XCTest

/// Learning rates per step against PyTorch's schedulers (Tests/Fixtures/lr_schedules.json, made
/// by tools/make_lr_fixture.py), and `--lr-scale`.
final class ScheduleTests: XCTestCase {
    func testRatesMatchPyTorchsSchedulersStepByStep() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixturesDirectory + "/lr_schedules.json"))
        let cases = try XCTUnwrap((try JSONSerialization.jsonObject(with: data) as? [String: Any])?["cases"] as? [[String: Any]])
        XCTAssertEqual(cases.count, 5)
        for c in cases {
            let peak = c["peak"] as! Double, warmup = c["warmup_steps"] as! Int, total = c["total_steps"] as! Int
            let schedule = LRSchedule(rawValue: c["schedule"] as! String)!
            let expected = c["rates"] as! [Double]
            XCTAssertEqual(expected.count, total)
            // One step per epoch, so that warm-up epochs are warm-up steps.
            let rates = LearningRates(lr: peak, scale: .none, globalBatch: 16, warmupEpochs: Double(warmup), epochs: total,
                                      stepsPerEpoch: 1, schedule: schedule)
            for (t, e) in expected.enumerated() {
                XCTAssertEqual(rates.rate(step: t), e, accuracy: 1e-7 * peak, "\(schedule) warm-up \(warmup), step \(t)")
            }
        }
    }

    func testWarmupEpochsCountStepsAndTheRateGrowsWithTheGlobalBatch() {
        let r = LearningRates(lr: 1e-3, scale: .none, globalBatch: 64, warmupEpochs: 1.5, epochs: 4, stepsPerEpoch: 10,
                              schedule: .cosine)
        XCTAssertEqual(r.warmupSteps, 15); XCTAssertEqual(r.totalSteps, 40)
        XCTAssertEqual(r.rate(step: 0), 1e-3 / 15, accuracy: 1e-18)
        XCTAssertEqual(r.rate(step: 14), 1e-3, accuracy: 1e-18)
        XCTAssertEqual(r.rate(step: 15), 1e-3, accuracy: 1e-18)
        XCTAssertLessThan(r.rate(step: 39), 1e-5)
        let scaled = { (scale: LRScale, batch: Int) in
            LearningRates(lr: 3e-4, scale: scale, globalBatch: batch, warmupEpochs: 0, epochs: 1, stepsPerEpoch: 1, schedule: .constant).peak
        }
        XCTAssertEqual(scaled(.none, 64), 3e-4)
        XCTAssertEqual(scaled(.linear, 64), 12e-4, accuracy: 1e-18)
        XCTAssertEqual(scaled(.sqrt, 64), 6e-4, accuracy: 1e-18)
        XCTAssertEqual(scaled(.linear, 8), 1.5e-4, accuracy: 1e-18)
    }
}
