import ArgumentParser
import Foundation
import Formats
import Model

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Score a checkpoint on every pair of a data directory (eval mode).")

    @Option(help: "A checkpoint (ours, or a PyTorch state_dict saved as safetensors).") var checkpoint: String
    @Option(help: "Seed-layout data directory.") var data: String
    @Option(help: "Images per forward pass.") var batchSize = 16
    @Flag(help: "Print one JSON object.") var json = false
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var precision: PrecisionOptions

    func run() throws {
        runDistributed(threads: compute) { comm, _ in
            var setupError: Error?
            var model: SegmentationModel?, dataset: SeedDataset?, size = (h: 0, w: 0)
            do {
                let st = try SafeTensors(path: checkpoint)
                let m = makeModel(try ModelConfig(inferredFrom: st, path: checkpoint))
                precision.apply(to: m)
                try m.load(st, path: checkpoint)
                let d = try SeedDataset(directory: data)
                let first = try Sample(d.pairs[0], classes: m.config.classes)
                model = m; dataset = d; size = (first.height, first.width)
            } catch let e { setupError = e }
            if let message = comm.agree(on: setupError) { throw RunError(message) }
            let s = try evaluate(model!, data: dataset!, indices: Array(0..<dataset!.count), batchSize: batchSize,
                                 size: size, batch: Batch(classes: model!.config.classes), comm: comm)
            let gm = model!.config.classes > 2 ? s.iou(1) : s.iou(0)
            if json {
                say(comm, String(format: "{\"loss\": %.10g, \"iou\": %.10g, \"iou_wm\": %.10g, \"iou_gm\": %.10g, \"dice\": %.10g, \"images\": %d}",
                                 s.loss, s.iou, s.iou(0), gm, s.dice, Int(s.images)))
            } else {
                say(comm, String(format: "loss %.5f iou %.5f iou_wm %.5f iou_gm %.5f dice %.5f (%d images)",
                                 s.loss, s.iou, s.iou(0), gm, s.dice, Int(s.images)))
            }
        }
    }
}
