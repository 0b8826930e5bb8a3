import ArgumentParser
import Distributed
import Foundation
import Kernels
import Model

/// Times real training steps (the same `trainStep` that `train` runs) on synthetic data.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Time training steps on synthetic data: images/s, ms per step and per layer kind, GFLOP/s, peak RSS.")

    @Option(help: "Image height and width.") var size = 394
    @Option(help: "Global batch size, split among the ranks.") var batchSize = 16
    @Option(help: "Timed steps (after one warm-up step).") var steps = 5
    @Option(help: "Side of the square sgemm timed on one thread (0 skips it).") var sgemmSize = 2048
    @Option(help: .hidden) var bandFloats: Int?
    @Option(help: .hidden) var minBandColumns: Int?
    @Option(help: .hidden) var directPixels: Int?
    @Flag(help: "Print one JSON object.") var json = false
    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var compute: ComputeOptions
    @OptionGroup var precision: PrecisionOptions
    @OptionGroup var buckets: BucketOptions

    func validate() throws {
        guard size >= 8 else { throw ValidationError("--size must be at least 8") }
        guard batchSize >= 1 else { throw ValidationError("--batch-size must be at least 1") }
        guard steps >= 1 else { throw ValidationError("--steps must be at least 1") }
        guard sgemmSize >= 0 else { throw ValidationError("--sgemm-size must not be negative") }
    }

    func run() throws {
        runDistributed(threads: compute) { comm, threads in
            // The machine's single-thread GEMM rate, measured first, one rank at a time would be
            // fairer under mpirun; every rank measures its own while the others do the same.
            let sgemm = sgemmSize > 0 ? measureSGEMM(size: sgemmSize, threads: 1) : 0
            setComputeThreads(threads)
            setBLASThreads(1)
            if let bandFloats { Kernels.bandFloats = max(1, bandFloats) }
            if let minBandColumns { Kernels.minBandColumns = max(1, minBandColumns) }
            if let directPixels { Kernels.directPixels = max(1, directPixels) }

            // vdpbf16ps's single-thread peak beside it (0 without AVX512_BF16).
            let bf16Peak = sgemmSize > 0 ? measureBF16Peak() : 0
            let net = makeModel(modelOptions.config, seed: 0)
            let precisionLine = precision.apply(to: net)
            net.useGradientBuckets(megabytes: buckets.bucketMb, comm: comm, timing: true)
            let local = share(0..<batchSize, rank: comm.rank, size: comm.size).count
            let classes = net.config.classes, plane = size * size
            let images = Tensor(Shape(local, net.config.inChannels, size, size))
            let targets = Tensor(Shape(local, classes, size, size))
            var rng = SplitMix64(seed: UInt64(comm.rank) + 1)
            for i in 0..<images.count { images.data[i] = rng.normal() }
            for n in 0..<local {
                for i in 0..<plane {
                    let label = Int(rng.next() % UInt64(classes))
                    for c in 0..<classes { targets.data[(n * classes + c) * plane + i] = c == label ? 1 : 0 }
                }
            }
            let settings = OptimizerSettings(kind: .adam, lr: 3e-4)
            let profile = LayerProfile()
            net.context.profile = profile
            var sync: SyncStatistics?
            if comm.size > 1 {
                sync = SyncStatistics(comm)
                sync!.profile = profile
            }
            // The warm-up step's reductions are every step's: the same layers in the same order.
            let recorder = RecordingStatistics(sync)
            net.context.statistics = recorder

            _ = net.trainStep(images: images, targets: targets, globalCount: batchSize,
                              comm: comm, optimizer: settings)
            recorder.recording = false
            // Each step's allreduces as a run with more than one rank makes them: BatchNorm's
            // per-channel sums in Float64, then the gradient of every parameter in Float32.
            let doubleCounts = recorder.counts, floatCounts = [net.store.parameterCount]
            profile.reset()
            net.store.buckets?.resetLeads()
            // Each step's time, and its seconds in collectives: under mpirun mostly waiting for
            // the slowest rank, so every rank's row shows which rank held the others up when.
            var times: [Double] = [], waits: [Double] = []
            let cpu0 = processCPUSeconds()
            for _ in 0..<steps {
                comm.barrier()
                let t0 = LayerProfile.now(), c0 = profile.collectiveSeconds
                _ = net.trainStep(images: images, targets: targets, globalCount: batchSize,
                                  comm: comm, optimizer: settings)
                times.append(LayerProfile.now() - t0)
                waits.append(profile.collectiveSeconds - c0)
            }
            // This process's CPU time per step (all its threads, user and system): on a loaded
            // machine, what a step costs without the time the scheduler gave to others.
            let cpuPerStep = (processCPUSeconds() - cpu0) / Double(steps)
            let stepSeconds = times.sorted()[times.count / 2]
            let perStep = 1 / Double(steps)
            let forward = profile.forward.map { $0 * perStep }, backward = profile.backward.map { $0 * perStep }
            let convKinds = [LayerProfile.Kind.conv.rawValue, LayerProfile.Kind.convTranspose.rawValue]
            let convSeconds = convKinds.reduce(0.0) { $0 + forward[$1] + backward[$1] }
            let flops = profile.convFlops * perStep

            // Global figures: every rank contributes its own slot, then one sum.
            var usage = rusage()
            getrusage(RUSAGE_SELF.rawValue, &usage)
            let rssMB = Double(usage.ru_maxrss) / 1024
            let width = 4 + steps
            var slots = [Double](repeating: 0, count: width * comm.size)
            slots[width * comm.rank] = Double(local) / stepSeconds
            slots[width * comm.rank + 1] = rssMB
            slots[width * comm.rank + 2] = flops / max(convSeconds, 1e-12)
            slots[width * comm.rank + 3] = flops
            for (i, w) in waits.enumerated() { slots[width * comm.rank + 4 + i] = w * 1000 }
            slots.withUnsafeMutableBufferPointer { comm.allreduceSum($0.baseAddress!, count: $0.count) }
            let ranks = 0..<comm.size
            let imagesPerSecond = ranks.reduce(0.0) { $0 + slots[width * $1] }
            let maxRSS = ranks.map { slots[width * $0 + 1] }.max()!, totalRSS = ranks.reduce(0.0) { $0 + slots[width * $1 + 1] }
            let convGflops = ranks.reduce(0.0) { $0 + slots[width * $1 + 2] } / Double(comm.size) / 1e9
            let stepGflops = ranks.reduce(0.0) { $0 + slots[width * $1 + 3] } / stepSeconds / 1e9
            let waitsByRank = ranks.map { Array(slots[(width * $0 + 4)..<(width * ($0 + 1))]) }
            // The rank that spent the longest in collectives waited most for the others.
            let collectiveMax = waitsByRank.map { $0.reduce(0, +) / Double(steps) }.max()!
            guard comm.isRoot else { return }

            let kinds = LayerProfile.Kind.allCases
            // The convolution layers' rate against the bf16 peak of all of a rank's threads (the
            // peak in CPU time, the layers in wall time: on a shared machine the share reads low).
            let convShare = bf16Peak > 0 ? convGflops / (bf16Peak * Double(threads)) : 0
            if json {
                var object: [String: Any] = [
                    "model": modelOptions.model, "size": size, "batch_size": batchSize, "steps": steps, "ranks": comm.size,
                    "threads": threads, "blas_core": blasCoreName, "avx512_kernels": avx512Kernels,
                    "images_per_s": imagesPerSecond, "step_ms": stepSeconds * 1000,
                    "step_ms_all": times.map { $0 * 1000 }, "cpu_ms_per_step": cpuPerStep * 1000,
                    "gflops": stepGflops, "conv_gflops": convGflops, "conv_gflop_per_step": flops * Double(comm.size) / 1e9,
                    "sgemm_gflops": sgemm, "peak_rss_mb": maxRSS, "peak_rss_mb_total": totalRSS,
                    "collectives_ms_max": collectiveMax, "collectives_ms_by_rank": waitsByRank,
                    "precision": precision.precision.rawValue, "bf16_kernels": bf16KernelsDescription,
                    "bf16_peak_gflops": bf16Peak, "conv_share_of_bf16_peak": convShare,
                    "allreduce_double_counts": doubleCounts, "allreduce_float_counts": floatCounts,
                    "bucket_mb": buckets.bucketMb, "bucket_counts": net.store.buckets?.ranges.map(\.count) ?? [],
                    "bucket_lead_ms": net.store.buckets?.meanLeadMilliseconds ?? [],
                ]
                var fw: [String: Double] = [:], bw: [String: Double] = [:]
                for k in kinds { fw[k.name] = forward[k.rawValue] * 1000; bw[k.name] = backward[k.rawValue] * 1000 }
                object["forward_ms"] = fw; object["backward_ms"] = bw
                let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
                print(String(decoding: data, as: UTF8.self))
            } else {
                print("unet-dist bench: \(modelOptions.model) \(size)x\(size), batch \(batchSize), \(comm.size) rank(s) x \(threads) thread(s), "
                      + "\(kernelsDescription), OpenBLAS \(blasCoreName), \(steps) steps after 1 warm-up")
                print(String(format: "images/s        %.2f", imagesPerSecond))
                print(String(format: "step ms         %.1f (median; all: %@)", stepSeconds * 1000,
                             times.map { String(format: "%.0f", $0 * 1000) }.joined(separator: " ")))
                func pad(_ name: String) -> String { "  " + name + String(repeating: " ", count: max(0, 18 - name.count)) }
                print("ms per step, rank 0   forward   backward")
                for k in kinds {
                    print(pad(k.name) + String(format: " %8.1f %10.1f", forward[k.rawValue] * 1000, backward[k.rawValue] * 1000))
                }
                print(pad("total") + String(format: " %8.1f %10.1f", forward.reduce(0, +) * 1000, backward.reduce(0, +) * 1000))
                print(String(format: "conv FLOP/step  %.1f GFLOP (conv and conv-transpose, forward and backward)", flops * Double(comm.size) / 1e9))
                print(String(format: "conv GFLOP/s    %.1f (in conv layers)   %.1f (over the whole step)", convGflops, stepGflops))
                print(String(format: "sgemm GFLOP/s   %.1f (one thread, %dx%d)", sgemm, sgemmSize, sgemmSize))
                print(String(format: "bf16 GFLOP/s    %.1f (vdpbf16ps peak, one thread); conv layers at %.0f%% of it x %d threads",
                             bf16Peak, 100 * convShare, threads))
                if let precisionLine { print("precision       " + precisionLine) }
                print(String(format: "peak RSS        %.0f MB per rank (max), %.0f MB total", maxRSS, totalRSS))
                print(String(format: "allreduces      %d per step: %d of Float64 (BatchNorm, %.1f KB in all), 1 of Float32 (gradients, %.1f MB)",
                             doubleCounts.count + 1, doubleCounts.count, Double(doubleCounts.reduce(0, +) * 8) / 1e3,
                             Double(floatCounts[0] * 4) / 1e6))
                if comm.size > 1 {
                    print(String(format: "collectives     %.1f ms per step on the rank that spent the longest in them (mostly waiting for the others)",
                                 collectiveMax))
                    print("collectives ms, each timed step, by rank:")
                    for (r, row) in waitsByRank.enumerated() {
                        print("  rank \(r): " + row.map { String(format: "%.0f", $0) }.joined(separator: " "))
                    }
                }
            }
        }
    }
}

/// User and system seconds of this process, all threads.
func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// Passes BatchNorm's reductions on to the ranks' reducer (none on one rank: the sums are this
/// rank's own) and, while `recording`, notes each one's length.
final class RecordingStatistics: StatisticsReducer {
    let inner: StatisticsReducer?
    var recording = true
    private(set) var counts: [Int] = []
    init(_ inner: StatisticsReducer?) { self.inner = inner }
    func sumAcrossReplicas(_ values: UnsafeMutablePointer<Double>, count: Int) {
        if recording { counts.append(count) }
        inner?.sumAcrossReplicas(values, count: count)
    }
}
