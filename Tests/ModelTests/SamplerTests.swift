import Model
import XCTest

final class SamplerTests: XCTestCase {
    func testEpochOrderIsAPermutationFixedBySeedAndEpoch() {
        let s = Sampler(count: 100, batchSize: 16, seed: 1)
        let a = s.order(epoch: 3)
        XCTAssertEqual(a.sorted(), Array(0..<100))
        XCTAssertEqual(a, s.order(epoch: 3))
        XCTAssertNotEqual(a, s.order(epoch: 4))
        XCTAssertNotEqual(a, Sampler(count: 100, batchSize: 16, seed: 2).order(epoch: 3))
        XCTAssertEqual(Sampler(count: 5, batchSize: 2, seed: 1, shuffle: false).order(epoch: 1), [0, 1, 2, 3, 4])
    }

    /// The order does not depend on the batch size or the micro-batches: changing either
    /// regroups the same sequence of samples.
    func testOrderDependsOnSeedAndEpochAlone() {
        let a = Sampler(count: 37, batchSize: 16, seed: 9).order(epoch: 2)
        XCTAssertEqual(a, Sampler(count: 37, batchSize: 5, seed: 9, accumulate: 3).order(epoch: 2))
    }

    func testSharesOfAGlobalBatchCoverItOnceForAnyNumberOfRanks() {
        let s = Sampler(count: 37, batchSize: 16, seed: 0)
        XCTAssertEqual(s.stepsPerEpoch, 3)
        let order = s.order(epoch: 1)
        var seen: [Int] = []
        for step in 0..<s.stepsPerEpoch {
            let global = s.globalBatch(order, step: step)
            XCTAssertEqual(global.count, step < 2 ? 16 : 5)
            seen += global
            for ranks in [1, 2, 3, 4, 7, 64] {
                let parts = (0..<ranks).map { Array(share(global, rank: $0, size: ranks)) }
                XCTAssertEqual(parts.flatMap { $0 }, Array(global), "\(ranks) ranks")
                XCTAssertLessThanOrEqual(parts.map(\.count).max()! - parts.map(\.count).min()!, 1)
            }
        }
        XCTAssertEqual(seen, order, "the epoch's global batches are its order, each sample once")
    }

    func testSharesPutTheLargerPartsOnTheLowerRanks() {
        XCTAssertEqual((0..<4).map { Array(share(0..<10, rank: $0, size: 4)) }, [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]])
        XCTAssertEqual((0..<3).map { share(0..<2, rank: $0, size: 3).count }, [1, 1, 0])
    }

    func testMicroBatchesSplitAGlobalBatchAsRanksWould() {
        let s = Sampler(count: 10, batchSize: 4, seed: 3, accumulate: 3)
        let order = s.order(epoch: 1)
        XCTAssertEqual(s.microBatchCount(4), 3)
        XCTAssertEqual(s.microBatchCount(2), 2, "a partial last batch has no empty micro-batch")
        for step in 0..<s.stepsPerEpoch {
            let global = s.globalBatch(order, step: step)
            let parts = (0..<s.microBatchCount(global.count)).map { s.microBatch(order, step: step, part: $0) }
            XCTAssertEqual(parts.map(Array.init), (0..<parts.count).map { Array(share(global, rank: $0, size: parts.count)) })
            XCTAssertEqual(parts.flatMap { $0 }, Array(global))
        }
    }
}
