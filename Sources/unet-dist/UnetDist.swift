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
        subcommands: [Train.self, Eval.self, Predict.self, Info.self, Bench.self, Prepare.self, Synth.self,
                      Overfit.self])

    static func main() {
        selectBLASKernelsOrReexec()
        cstop_ignore_file_size_signal()
        main(nil)
    }
}

/// Runs a subcommand's work on every rank: one communicator for the process, finalized on every
/// path; an error becomes one line on stderr from rank 0 and exit status 1 on every rank; a stop
/// on a signal, after its checkpoint, exit status 75 (`stoppedExitStatus`) on every rank.
func runDistributed(threads: ComputeOptions, _ body: (Communicator, Int) throws -> Void) -> Never {
    let comm = makeCommunicator()
    // One process has no peer to wait for, and its own long loops (predict over many volumes)
    // make no collective calls: only ranks of a job are watched.
    if comm.size > 1 && threads.stallTimeout > 0 { Watchdog.start(timeout: threads.stallTimeout, rank: comm.rank) }
    let n = threads.resolvedThreads(comm)
    if comm.isRoot, n > threads.coresPerRank(comm) {
        let cores = ProcessInfo.processInfo.activeProcessorCount
        FileHandle.standardError.write(Data(("warning: --threads \(n) is more than the "
            + "\(threads.coresPerRank(comm)) core(s) per rank (\(cores) cores, \(comm.localSize) rank(s) on this "
            + "node): the threads will share cores\n").utf8))
    }
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
