import Model
import XCTest

final class AugmentationTests: XCTestCase {
    func testDrawnFromSeedEpochAndSampleOnly() {
        XCTAssertEqual(Augmentation(seed: 3, epoch: 2, sample: 17), Augmentation(seed: 3, epoch: 2, sample: 17))
        let draws = (0..<64).map { Augmentation(seed: 3, epoch: 2, sample: $0) }
        XCTAssertEqual(Set(draws.map(\.quarterTurns)), [0, 1, 2, 3])
        XCTAssertTrue(draws.contains { $0.flipRows } && draws.contains { !$0.flipRows })
        XCTAssertTrue(draws.allSatisfy { (0.9...1.1).contains($0.scale) && (-0.05...0.05).contains($0.shift) })
        XCTAssertNotEqual(draws, (0..<64).map { Augmentation(seed: 3, epoch: 3, sample: $0) })
    }

    func testImageAndLabelsMoveTogetherAndQuarterTurnsRotate() {
        var a = Augmentation()
        a.quarterTurns = 1; a.scale = 2; a.shift = 1
        // 3x3 image 0...8 with labels equal to the pixel index mod 3.
        var image = (0..<9).map(Float.init), labels = (0..<9).map { UInt8($0 % 3) }
        var s: [Float] = [], ls: [UInt8] = []
        a.apply(image: &image, labels: &labels, height: 3, width: 3, scratch: &s, labelScratch: &ls)
        // One quarter turn: output (r, c) takes input (c, 2 - r).
        let expectedSource = [2, 5, 8, 1, 4, 7, 0, 3, 6]
        XCTAssertEqual(image, expectedSource.map { Float($0) * 2 + 1 })
        XCTAssertEqual(labels, expectedSource.map { UInt8($0 % 3) })

        var f = Augmentation()
        f.flipColumns = true
        var wide = (0..<6).map(Float.init), wideLabels = [UInt8](repeating: 0, count: 6)
        f.apply(image: &wide, labels: &wideLabels, height: 2, width: 3, scratch: &s, labelScratch: &ls)
        XCTAssertEqual(wide, [2, 1, 0, 5, 4, 3])
    }
}
