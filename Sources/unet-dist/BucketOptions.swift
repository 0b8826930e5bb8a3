import ArgumentParser
import Model

/// How the ranks sum the gradients: `train` and `bench` take it.
struct BucketOptions: ParsableArguments {
    @Option(help: ArgumentHelp("With several ranks: sum the gradients in buckets of this many MiB, each started "
                               + "(non-blocking) as soon as the backward has finished it, so that the sums overlap "
                               + "the rest of the backward; 0: one allreduce after the backward.", valueName: "MiB"))
    var bucketMb = GradientBuckets.defaultMegabytes

    func validate() throws {
        guard bucketMb >= 0, bucketMb.isFinite else {
            throw ValidationError("--bucket-mb must be 0 (one allreduce) or positive")
        }
    }
}
