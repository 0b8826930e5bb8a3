import Foundation

/// One epoch's figures, as printed and written to history.csv.
public struct EpochRecord {
    public var epoch: Int
    public var loss: Double, iou: Double
    public var testLoss: Double, testIoU: Double, testIoUWM: Double, testIoUGM: Double, dice: Double
    public var seconds: Double, imagesPerSecond: Double
    /// The learning rate of the epoch's last step.
    public var lr: Double

    static let header = "epoch,loss,iou,test_loss,test_iou,test_iou_wm,test_iou_gm,dice,seconds,images_per_s,lr"
    var csv: String {
        let fields = [String(epoch)]
            + [loss, iou, testLoss, testIoU, testIoUWM, testIoUGM, dice].map { String(format: "%.6f", $0) }
            + [String(format: "%.2f", seconds), String(format: "%.2f", imagesPerSecond), String(format: "%.6g", lr)]
        return fields.joined(separator: ",")
    }
}

extension EpochRecord {
    var json: String {
        String(format: "{\"epoch\": %d, \"loss\": %.6f, \"iou\": %.6f, \"test_loss\": %.6f, \"test_iou\": %.6f, "
               + "\"test_iou_wm\": %.6f, \"test_iou_gm\": %.6f, \"dice\": %.6f, \"seconds\": %.2f, "
               + "\"images_per_s\": %.2f, \"lr\": %.6g}",
               epoch, loss, iou, testLoss, testIoU, testIoUWM, testIoUGM, dice, seconds, imagesPerSecond, lr)
    }

    /// A row of history.csv as written by `csv` (for a resumed run's earlier epochs; rows
    /// written before the learning rate was recorded have no `lr`, read as 0).
    init?(csv line: Substring) {
        let f = line.split(separator: ",").map { Double($0) }
        guard f.count == 10 || f.count == 11, !f.contains(where: { $0 == nil }) else { return nil }
        self.init(epoch: Int(f[0]!), loss: f[1]!, iou: f[2]!, testLoss: f[3]!, testIoU: f[4]!, testIoUWM: f[5]!,
                  testIoUGM: f[6]!, dice: f[7]!, seconds: f[8]!, imagesPerSecond: f[9]!, lr: f.count > 10 ? f[10]! : 0)
    }
}
