import Foundation
import Model
import TestSupport
import XCTest

/// HD95 and the average surface distance against SciPy's distance transform
/// (Tests/Fixtures/surface_distances.json, made by tools/make_surface_fixtures.py), empty masks,
/// one-pixel masks and anisotropic pixels included.
final class SurfaceDistanceTests: XCTestCase {
    func testMatchesSciPysDistanceTransform() throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: fixturesDirectory + "/surface_distances.json"))
        let cases = try XCTUnwrap((try JSONSerialization.jsonObject(with: data) as? [String: Any])?["cases"] as? [[String: Any]])
        XCTAssertEqual(cases.count, 10)
        for (k, c) in cases.enumerated() {
            let h = c["height"] as! Int, w = c["width"] as! Int, sp = c["spacing_rows_columns"] as! [Double]
            let pred = (c["pred"] as! [Int]).map { $0 != 0 }, truth = (c["truth"] as! [Int]).map { $0 != 0 }
            let d = SurfaceDistance(pred: pred, truth: truth, height: h, width: w, spacing: (sp[0], sp[1]))
            if let hd95 = c["hd95"] as? Double, let asd = c["asd"] as? Double {
                XCTAssertEqual(d.hd95, hd95, accuracy: 1e-9 * max(1, hd95), "case \(k)")
                XCTAssertEqual(d.asd, asd, accuracy: 1e-9 * max(1, asd), "case \(k)")
            } else {
                XCTAssertTrue(d.hd95.isNaN && d.asd.isNaN, "case \(k): one mask empty, undefined")
            }
        }
    }
}

final class LargestComponentTests: XCTestCase {
    func testKeepsTheLargest6ConnectedPieceAndClearsTheRest() {
        // 4 x 3 x 2 voxels, x fastest: label 1 as a piece of 4 across both z layers, a piece of 2
        // touching it only diagonally, and a lone voxel; label 0 untouched.
        var v: [UInt8] = [1, 1, 2, 0,
                          2, 1, 2, 2,
                          1, 2, 1, 1,
                          1, 2, 2, 2,
                          2, 2, 2, 2,
                          2, 2, 2, 2]
        keepLargestComponent(&v, label: 1, background: 2, dims: [4, 3, 2])
        XCTAssertEqual(v, [1, 1, 2, 0,
                           2, 1, 2, 2,
                           2, 2, 2, 2,
                           1, 2, 2, 2,
                           2, 2, 2, 2,
                           2, 2, 2, 2])
    }
}
