import ArgumentParser
import Kernels
import Model

extension Precision: ExpressibleByArgument {}

/// `--precision`: the convolutions' arithmetic. bf16 is mixed precision: the 3x3 convolutions
/// take bf16 operands (rounded to nearest even) and sum in float32; weights, gradients, optimizer
/// state, checkpoints, BatchNorm, the loss and the gradient sum stay float32 (or Float64).
struct PrecisionOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Convolution arithmetic: fp32, or bf16 (3x3 convolutions with bf16 inputs and weights, float32 sums).",
        discussion: "With bf16, weights, gradients, optimizer state and checkpoints stay float32. Without "
            + "AVX512_BF16, bf16 runs portable kernels that give the same results, slowly."))
    var precision = Precision.fp32

    /// Sets the model's precision; the line `train` and `bench` print about it (nil for fp32).
    @discardableResult
    func apply(to model: SegmentationModel) -> String? {
        model.context.precision = precision
        return precision == .bf16 ? "bf16 convolutions (\(bf16KernelsDescription) kernels)" : nil
    }
}
