import Model
import XCTest

final class SamplerTests: XCTestCase {
    func testEpochOrderIsAPermutationFixedBySeedAndEpoch() {
        let a = epochOrder(count: 100, seed: 1, epoch: 3, shuffle: true)
        XCTAssertEqual(a.sorted(), Array(0..<100))
        XCTAssertEqual(a, epochOrder(count: 100, seed: 1, epoch: 3, shuffle: true))
        XCTAssertNotEqual(a, epochOrder(count: 100, seed: 1, epoch: 4, shuffle: true))
        XCTAssertNotEqual(a, epochOrder(count: 100, seed: 2, epoch: 3, shuffle: true))
        XCTAssertEqual(epochOrder(count: 5, seed: 1, epoch: 1, shuffle: false), [0, 1, 2, 3, 4])
    }

    func testSharesOfAGlobalBatchCoverItOnceForAnyNumberOfRanks() {
        let order = epochOrder(count: 37, seed: 0, epoch: 1, shuffle: true)
        for step in 0..<3 {
            let global = globalBatch(order: order, step: step, batchSize: 16)
            XCTAssertEqual(global.count, step < 2 ? 16 : 5)
            for ranks in [1, 2, 3, 4, 7, 64] {
                let parts = (0..<ranks).map { Array(share(global, rank: $0, size: ranks)) }
                XCTAssertEqual(parts.flatMap { $0 }, Array(global), "\(ranks) ranks")
                XCTAssertLessThanOrEqual(parts.map(\.count).max()! - parts.map(\.count).min()!, 1)
            }
        }
    }
}
