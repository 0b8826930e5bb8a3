import Foundation
import Model

/// A tqdm-like bar for a terminal: `Epoch 3/30 loss 0.12345 iou 0.81234 |#####     | 12/23 [00:05<00:04, 2.31it/s]`,
/// redrawn in place; the epoch's summary line replaces it when the epoch ends.
struct ProgressBar {
    static var stdoutIsTerminal: Bool { isatty(STDOUT_FILENO) != 0 }

    static func line(_ p: StepProgress, width: Int = 24) -> String {
        let filled = p.steps > 0 ? p.step * width / p.steps : width
        let rate = p.elapsed > 0 ? Double(p.step) / p.elapsed : 0
        let remaining = rate > 0 ? Double(p.steps - p.step) / rate : 0
        return String(format: "Epoch %d/%d loss %.5f iou %.5f |%@%@| %d/%d [%@<%@, %.2fit/s]", p.epoch, p.epochs,
                      p.loss, p.iou,
                      String(repeating: "#", count: filled), String(repeating: " ", count: width - filled),
                      p.step, p.steps, clock(p.elapsed), clock(remaining), rate)
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%02d:%02d",
                                                                                                  s / 60, s % 60)
    }

    static func draw(_ p: StepProgress) {
        // \r back to the start of the line, \u{1B}[K clears what a longer line left.
        FileHandle.standardOutput.write(Data(("\r" + line(p) + "\u{1B}[K").utf8))
    }

    /// Ends the bar's line so the next print starts clean.
    static func clear() { FileHandle.standardOutput.write(Data("\r\u{1B}[K".utf8)) }
}
