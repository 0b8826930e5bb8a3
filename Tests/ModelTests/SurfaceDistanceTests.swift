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
