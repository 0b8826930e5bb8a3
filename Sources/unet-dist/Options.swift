import ArgumentParser
import Distributed
import Foundation
import Model

extension ModelKind: ExpressibleByArgument {}

/// The training or test data.
struct DataOptions: ParsableArguments {
    @Option(help: "Data directory: MRIs/<name>_<ix>.npy and Segmentations/segm_<ix>.npy.")
    var data: String
}

/// Which model a subcommand builds: the UNet or its ResNet-18 variant (docs/design.md, section
/// 1), at the default widths unless told otherwise.
struct ModelOptions: ParsableArguments {
    @Option(help: "unet, or unet-resnet (the UNet with a ResNet-18 encoder).")
    var model = ModelKind.unet
    @Option(help: "Base width; the others double from it (default: 16 for unet, 64 for unet-resnet).")
    var width: Int?

    func validate() throws {
        if let width, width < 1 { throw ValidationError("--width must be at least 1") }
    }

    var config: ModelConfig { ModelConfig(model, width: width) }
}

/// Flags every compute subcommand takes.
struct ComputeOptions: ParsableArguments {
    @Option(help: "Threads per rank for OpenBLAS (default: the node's cores divided among its ranks).")
    var threads: Int?
    @Option(help: ArgumentHelp(
        "Seconds without progress after which a rank ends the job (0: off).",
        discussion: "With several ranks: a rank that sees no progress (no collective completed, no step begun) for "
            + "this many seconds prints where it waits and ends the job with status 137, as a dead rank.",
        valueName: "seconds"))
    var stallTimeout = 600.0

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        guard stallTimeout >= 0, stallTimeout.isFinite else {
            throw ValidationError("--stall-timeout must be 0 (off) or positive")
        }
    }

    func coresPerRank(_ comm: Communicator) -> Int {
        max(1, ProcessInfo.processInfo.activeProcessorCount / max(comm.localSize, 1))
    }

    func resolvedThreads(_ comm: Communicator) -> Int { threads ?? coresPerRank(comm) }
}

/// How `train` shows its progress on rank 0.
struct ProgressOptions: ParsableArguments {
    enum Mode: String, ExpressibleByArgument, CaseIterable {
        case auto, bar, lines
    }

    @Option(help: ArgumentHelp(
        "Progress display: bar (redrawn in place), lines (one per epoch) or auto.",
        discussion: "auto: a bar when stdout is a terminal and no MPI launcher is in between (mpirun hands every "
            + "rank a pseudo-terminal, wherever its own output goes)."))
    var progress = Mode.auto

    /// Whether this rank draws a bar.
    func drawsBar(_ comm: Communicator, quiet: Bool) -> Bool {
        !quiet && comm.isRoot
            && (progress == .bar || (progress == .auto && ProgressBar.stdoutIsTerminal && !launchedByMPI))
    }
}
