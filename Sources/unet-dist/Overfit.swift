import ArgumentParser
import Foundation
import Formats
import Kernels
import Model

struct Overfit: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A sanity check: fit one slice with Adam and watch its loss fall and IoU rise.")

    @OptionGroup var dataOptions: DataOptions
    @Option(help: "Which pair, in file-name order.") var index = 0
    @Option(help: "Optimizer steps.") var steps = 100
    @Option(help: "Learning rate.") var lr = 1e-3
    @Option(help: "Seed for initialization.") var seed: UInt64 = 0
    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var precision: PrecisionOptions

    func run() throws {
        runDistributed(threads: compute) { comm, _ in
            let data = dataOptions.data
            let dataset = try SeedDataset(directory: data)
            guard index >= 0, index < dataset.count else {
                throw FormatError(data, "--index \(index) is out of range (\(dataset.count) pairs)")
            }
            let model = makeModel(modelOptions.config, seed: seed)
            precision.apply(to: model)
            let sample = try Sample(dataset.pairs[index], classes: model.config.classes)
            let batch = Batch(classes: model.config.classes)
            try batch.load([index], from: dataset, height: sample.height, width: sample.width)
            let settings = OptimizerSettings(kind: .adam, lr: lr)
            let dlogits = Tensor()
            var scores = ScoreSums(classes: model.config.classes)
            for step in 1...steps {
                let logits = model.forward(batch.images)
                dlogits.reshape(logits.shape)
                let sum = bceWithLogits(dlogits: dlogits.data, logits: logits.data, targets: batch.targets.data,
                                        count: logits.count, gradScale: 1 / Float(logits.count))
                scores.reset()
                batch.labels.withUnsafeBufferPointer {
                    scores.add(logits: logits.data, labels: $0.baseAddress!, batch: 1,
                               spatial: sample.height * sample.width,
                               lossSum: sum)
                }
                model.store.zeroGradients()
                model.backward(dlogits)
                model.store.applyOptimizer(settings)
                say(comm, String(format: "step %d/%d loss %.5f iou %.5f", step, steps, scores.loss, scores.iou))
            }
        }
    }
}
