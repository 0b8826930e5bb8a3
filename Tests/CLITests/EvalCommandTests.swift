import Foundation
import Formats
import TestSupport
import XCTest

/// `eval --split`, the per-class surface distances (in mm where the manifest gives the pixel
/// size), `--per-image` worst first, and the same figures from any number of ranks.
final class EvalCommandTests: ScratchTestCase {
    let data = fixturesDirectory + "/seeddata"
    let checkpoint = fixturesDirectory + "/torch_trained.safetensors"

    func eval(_ flags: [String], data: String? = nil, ranks: Int? = nil) throws -> CommandResult {
        try runUnetDist(["eval", "--checkpoint", checkpoint, "--data", data ?? self.data, "--threads", "1"] + flags, ranks: ranks)
    }

    func json(_ r: CommandResult) throws -> [String: Any] {
        XCTAssertEqual(r.status, 0, r.stderr)
        return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
    }

    func testSplitsPerClassFiguresAndPerImageRowsAreTheSameOnEveryNumberOfRanks() throws {
        let dir = try scratchDirectory()
        let all = try json(try eval(["--json"]))
        XCTAssertEqual(all["images"] as? Int, 10); XCTAssertEqual(all["unit"] as? String, "px")
        XCTAssertEqual(try json(try eval(["--json", "--split", "test", "--test-count", "3"]))["images"] as? Int, 3)
        XCTAssertEqual(try json(try eval(["--json", "--split", "train", "--test-count", "3"]))["images"] as? Int, 7)
        let perClass = try XCTUnwrap(all["per_class"] as? [String: [String: Any]])
        XCTAssertEqual(perClass.keys.sorted(), ["gray_matter", "white_matter"])
        for (_, figures) in perClass {
            let dice = figures["dice"] as! Double, hd95 = figures["hd95"] as! Double, asd = figures["asd"] as! Double
            XCTAssertTrue(dice > 0.3 && dice <= 1, "\(figures)"); XCTAssertTrue(hd95 >= asd && asd >= 0, "\(figures)")
        }

        var outputs: [String] = [], tables: [String] = []
        for ranks in [nil, 2, 3] {
            let csv = dir + "/images\(ranks ?? 1).csv"
            let r = try eval(["--json", "--per-image", csv], ranks: ranks)
            XCTAssertEqual(r.status, 0, r.stderr)
            outputs.append(r.stdout); tables.append(try String(contentsOfFile: csv, encoding: .utf8))
        }
        XCTAssertEqual(Set(outputs).count, 1, "the same figures to the last digit:\n\(outputs.joined())")
        XCTAssertEqual(Set(tables).count, 1)
        let rows = tables[0].split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false) }
        XCTAssertEqual(rows[0].joined(separator: ","), "file,mean_dice,dice_wm,dice_gm,iou_wm,iou_gm,hd95_px_wm,hd95_px_gm,asd_px_wm,asd_px_gm")
        XCTAssertEqual(rows.count, 11)
        let means = rows.dropFirst().map { Double($0[1])! }
        XCTAssertEqual(means, means.sorted(), "worst first")
        for row in rows.dropFirst() { XCTAssertEqual(Double(row[1])!, (Double(row[2])! + Double(row[3])!) / 2, accuracy: 2e-6) }

        // A manifest with the pixel size: the same distances in mm, 1.5 times the pixels.
        let withManifest = dir + "/data"
        try FileManager.default.copyItem(atPath: data, toPath: withManifest)
        let manifest = ["file,source,axis,slice_index,pixel_mm_x,pixel_mm_y"]
            + (0..<10).map { String(format: "slice_%03d.npy,t1.nii.gz,axial,%d,1.5,1.5", $0, $0) }
        try Data((manifest.joined(separator: "\n") + "\n").utf8).write(to: URL(fileURLWithPath: withManifest + "/manifest.csv"))
        let mm = try json(try eval(["--json"], data: withManifest))
        XCTAssertEqual(mm["unit"] as? String, "mm")
        let a = (all["per_class"] as! [String: [String: Any]])["white_matter"]!, b = (mm["per_class"] as! [String: [String: Any]])["white_matter"]!
        XCTAssertEqual(b["hd95"] as! Double, 1.5 * (a["hd95"] as! Double), accuracy: 1e-9)
        XCTAssertEqual(b["asd"] as! Double, 1.5 * (a["asd"] as! Double), accuracy: 1e-9)
        XCTAssertEqual(b["dice"] as! Double, a["dice"] as! Double)
    }
}
