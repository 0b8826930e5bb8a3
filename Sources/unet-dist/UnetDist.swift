import ArgumentParser
import CStop
import Distributed
import Foundation
import Kernels
import Model

@main
struct UnetDist: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unet-dist",
        abstract: "Train a UNet to segment brain MRI slices, data-parallel over MPI ranks.",
        version: "0.1.0",
        subcommands: [Train.self, Eval.self, Predict.self, Info.self, Bench.self, Prepare.self, Synth.self, Overfit.self])

    static func main() {
        selectBLASKernelsOrReexec()
        cstop_ignore_file_size_signal()
        main(nil)
    }
}

/// Flags every compute subcommand takes.
struct ComputeOptions: ParsableArguments {
    @Option(help: "Threads per rank for OpenBLAS (default: the node's cores divided among its ranks).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func resolvedThreads(_ comm: Communicator) -> Int {
        threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / max(comm.localSize, 1))
    }
}

/// Runs a subcommand's work on every rank: one communicator for the process, finalized on every
/// path; an error becomes one line on stderr from rank 0 and exit status 1 on every rank; a stop
/// on a signal, after its checkpoint, exit status 75 (`stoppedExitStatus`) on every rank.
func runDistributed(threads: ComputeOptions, _ body: (Communicator, Int) throws -> Void) -> Never {
    let comm = makeCommunicator()
    let n = threads.resolvedThreads(comm)
    // Our kernels spread images and bands of rows over the threads, one OpenBLAS thread each.
    setComputeThreads(n)
    setBLASThreads(1)
    do {
        try body(comm, n)
        fflush(stdout)
        comm.finalize()
        exit(0)
    } catch let stop as Interrupted {
        if comm.isRoot { FileHandle.standardError.write(Data("unet-dist: \(stop)\n".utf8)) }
        fflush(stdout)
        comm.finalize()
        exit(stoppedExitStatus)
    } catch {
        if comm.isRoot {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        }
        fflush(stdout)
        comm.finalize()
        exit(1)
    }
}

/// Prints from rank 0 only, flushed at once so progress shows under mpirun and in pipes.
func say(_ comm: Communicator, _ line: String) {
    guard comm.isRoot else { return }
    print(line)
    fflush(stdout)
}

/// Which model a subcommand builds: the seed's UNet or its ResNet-18 UNet, at the seed's widths
/// unless told otherwise.
struct ModelOptions: ParsableArguments {
    @Option(help: "unet (the seed's UNet) or unet-resnet (the seed's UNet with a ResNet-18 encoder).")
    var model = "unet"
    @Option(help: "Base width; the others double from it (default: the seed's, 16 for unet, 64 for unet-resnet).")
    var width: Int?

    func validate() throws {
        guard ModelKind(rawValue: model) != nil else { throw ValidationError("--model must be unet or unet-resnet") }
        if let width, width < 1 { throw ValidationError("--width must be at least 1") }
    }

    var config: ModelConfig { ModelConfig(ModelKind(rawValue: model)!, width: width) }
}
