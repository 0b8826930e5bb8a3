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
    @Option(help: .hidden) var paddedFloats: Int?
    @Option(help: .hidden) var paddedMinRows: Int?
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
            // vdpbf16ps's single-thread peak beside it (0 without AVX512_BF16).
            let bf16Peak = sgemmSize > 0 ? measureBF16Peak() : 0
            let setup = makeSetup(comm)
            let steps = timeSteps(setup, comm)
            let r = BenchResult(steps, setup, comm, sgemm: sgemm, bf16Peak: bf16Peak, threads: threads)
            // After the peak RSS was read: the triad's arrays are not the model's memory. Every
            // rank measures at once, so each gets its share of a node's memory, as in training.
            let bandwidth = sgemmSize > 0 ? measureTriadBandwidth() : 0
            let shares = PeakShares(r, sgemm: sgemm, bf16Peak: bf16Peak, bandwidth: bandwidth, threads: threads,
                                    bf16: precision.precision == .bf16)
            guard comm.isRoot else { return }
            if json {
                try printJSON(r, shares, comm: comm, threads: threads)
            } else {
                printText(r, shares, comm: comm, threads: threads)
            }
        }
    }

    /// The model, this rank's share of a synthetic batch, and the profile the steps fill.
    struct Setup {
        let net: SegmentationModel
        let images: Tensor, targets: Tensor
        let local: Int
        let profile: LayerProfile
        let recorder: RecordingStatistics
        let precisionLine: String?
    }

    func makeSetup(_ comm: Communicator) -> Setup {
        let net = makeModel(modelOptions.config, seed: 0)
        let precisionLine = precision.apply(to: net)
        let defaults = KernelTuning()
        net.context.tuning = KernelTuning(bandFloats: bandFloats ?? defaults.bandFloats,
                                          minBandColumns: minBandColumns ?? defaults.minBandColumns,
                                          directPixels: directPixels ?? defaults.directPixels,
                                          paddedFloats: paddedFloats ?? defaults.paddedFloats,
                                          paddedMinRows: paddedMinRows ?? defaults.paddedMinRows)
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
        return Setup(net: net, images: images, targets: targets, local: local, profile: profile, recorder: recorder,
                     precisionLine: precisionLine)
    }

    /// Each timed step's seconds and its seconds in collectives, and the CPU seconds per step.
    struct StepTimes {
        var times: [Double] = [], waits: [Double] = []
        var cpuPerStep = 0.0
    }

    /// One warm-up step, then `steps` timed ones.
    func timeSteps(_ s: Setup, _ comm: Communicator) -> StepTimes {
        let settings = OptimizerSettings(kind: .adam, lr: 3e-4)
        _ = s.net.trainStep(images: s.images, targets: s.targets, globalCount: batchSize, comm: comm,
                            optimizer: settings)
        s.recorder.recording = false
        s.profile.reset()
        s.net.store.buckets?.resetLeads()
        // Each step's time, and its seconds in collectives: under mpirun mostly waiting for
        // the slowest rank, so every rank's row shows which rank held the others up when.
        var t = StepTimes()
        let cpu0 = processCPUSeconds()
        for _ in 0..<steps {
            comm.barrier()
            let t0 = LayerProfile.now(), c0 = s.profile.collectiveSeconds
            _ = s.net.trainStep(images: s.images, targets: s.targets, globalCount: batchSize, comm: comm,
                                optimizer: settings)
            t.times.append(LayerProfile.now() - t0)
            t.waits.append(s.profile.collectiveSeconds - c0)
        }
        // This process's CPU time per step (all its threads, user and system): on a loaded
        // machine, what a step costs without the time the scheduler gave to others.
        t.cpuPerStep = (processCPUSeconds() - cpu0) / Double(steps)
        return t
    }

    func printJSON(_ r: BenchResult, _ shares: PeakShares, comm: Communicator, threads: Int) throws {
        var object: [String: Any] = [
            "model": modelOptions.model.rawValue, "size": size, "batch_size": batchSize, "steps": steps,
            "ranks": comm.size, "threads": threads, "blas_core": blasCoreName, "avx512_kernels": avx512Kernels,
            "vector_kernels": "\(vectorKernels)",
            "images_per_s": r.imagesPerSecond, "step_ms": r.stepSeconds * 1000,
            "step_ms_all": r.times.map { $0 * 1000 }, "cpu_ms_per_step": r.cpuPerStep * 1000,
            "gflops": r.stepGflops, "conv_gflops": r.convGflops,
            "conv_gflop_per_step": r.flops * Double(comm.size) / 1e9,
            "sgemm_gflops": r.sgemm, "peak_rss_mb": r.maxRSS, "peak_rss_mb_total": r.totalRSS,
            "collectives_ms_max": r.collectiveMax, "collectives_ms_by_rank": r.waitsByRank,
            "precision": precision.precision.rawValue, "bf16_kernels": bf16KernelsDescription,
            "bf16_peak_gflops": r.bf16Peak, "conv_share_of_bf16_peak": r.convShare,
            "allreduce_double_counts": r.doubleCounts, "allreduce_float_counts": r.floatCounts,
            "bucket_mb": buckets.bucketMb, "bucket_counts": r.bucketCounts, "bucket_lead_ms": r.bucketLeadMs,
        ]
        var fw: [String: Double] = [:], bw: [String: Double] = [:]
        for k in LayerProfile.Kind.allCases {
            fw[k.name] = r.forward[k.rawValue] * 1000
            bw[k.name] = r.backward[k.rawValue] * 1000
        }
        object["forward_ms"] = fw
        object["backward_ms"] = bw
        object["bytes_per_step_by_kind"] = Dictionary(uniqueKeysWithValues: LayerProfile.Kind.allCases.map {
            ($0.name, r.bytesByKind[$0.rawValue])
        })
        object["triad_gbps"] = shares.bandwidth
        object["conv_peak_gflops"] = shares.convPeak
        object["share_of_peak"] = Dictionary(uniqueKeysWithValues: shares.rows.map { ($0.kind.name, $0.share) })
        object["rate_by_kind"] = Dictionary(uniqueKeysWithValues: shares.rows.map { ($0.kind.name, $0.rate) })
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }

    func printText(_ r: BenchResult, _ shares: PeakShares, comm: Communicator, threads: Int) {
        print("unet-dist bench: \(modelOptions.model.rawValue) \(size)x\(size), batch \(batchSize), "
              + "\(comm.size) rank(s) x \(threads) thread(s), "
              + "\(kernelsDescription), OpenBLAS \(blasCoreName), \(steps) steps after 1 warm-up")
        print(String(format: "images/s        %.2f", r.imagesPerSecond))
        print(String(format: "step ms         %.1f (median; all: %@)", r.stepSeconds * 1000,
                     r.times.map { String(format: "%.0f", $0 * 1000) }.joined(separator: " ")))
        func pad(_ name: String) -> String { "  " + name + String(repeating: " ", count: max(0, 18 - name.count)) }
        print("ms per step, rank 0   forward   backward")
        for k in LayerProfile.Kind.allCases {
            print(pad(k.name) + String(format: " %8.1f %10.1f", r.forward[k.rawValue] * 1000,
                                       r.backward[k.rawValue] * 1000))
        }
        print(pad("total") + String(format: " %8.1f %10.1f", r.forward.reduce(0, +) * 1000,
                                    r.backward.reduce(0, +) * 1000))
        print(String(format: "conv FLOP/step  %.1f GFLOP (conv and conv-transpose, forward and backward)",
                     r.flops * Double(comm.size) / 1e9))
        print(String(format: "conv GFLOP/s    %.1f (in conv layers)   %.1f (over the whole step)", r.convGflops,
                     r.stepGflops))
        print(String(format: "sgemm GFLOP/s   %.1f (one thread, %dx%d)", r.sgemm, sgemmSize, sgemmSize))
        if r.bf16Peak > 0 {
            print(String(format: "bf16 GFLOP/s    %.1f (vdpbf16ps peak, one thread); "
                         + "conv layers at %.0f%% of it x %d threads",
                         r.bf16Peak, 100 * r.convShare, threads))
        } else {
            print("bf16 GFLOP/s    none measured (no vdpbf16ps on this CPU)")
        }
        if let line = r.precisionLine { print("precision       " + line) }
        if shares.bandwidth > 0 {
            print(String(format: "memory GB/s     %.1f (triad, %d thread(s))", shares.bandwidth, threads))
            if shares.convPeak > 0 {
                print(String(format: "share of peak   rank 0: convolutions against %.0f GFLOP/s (%@ x %d threads), "
                             + "the others against the triad", shares.convPeak,
                             shares.bf16 ? "vdpbf16ps peak" : "one-thread sgemm", threads))
            } else {
                // Without AVX512_BF16 the bf16 kernels have no instruction peak to be measured against.
                print("share of peak   rank 0: the others against the triad (no vdpbf16ps on this CPU: "
                      + "no peak for the convolutions)")
            }
            for row in shares.rows {
                print(pad(row.kind.name) + String(format: " %8.1f %@  %3.0f%%", row.rate,
                                                  row.kind.isConvolution ? "GFLOP/s" : "GB/s   ", 100 * row.share))
            }
        }
        print(String(format: "peak RSS        %.0f MB per rank (max), %.0f MB total", r.maxRSS, r.totalRSS))
        print(String(format: "allreduces      %d per step: %d of Float64 (BatchNorm, %.1f KB in all), "
                     + "1 of Float32 (gradients, %.1f MB)",
                     r.doubleCounts.count + 1, r.doubleCounts.count, Double(r.doubleCounts.reduce(0, +) * 8) / 1e3,
                     Double(r.floatCounts[0] * 4) / 1e6))
        guard comm.size > 1 else { return }
        print(String(format: "collectives     %.1f ms per step on the rank that spent the longest in them "
                     + "(mostly waiting for the others)", r.collectiveMax))
        print("collectives ms, each timed step, by rank:")
        for (rank, row) in r.waitsByRank.enumerated() {
            print("  rank \(rank): " + row.map { String(format: "%.0f", $0) }.joined(separator: " "))
        }
    }
}

/// The figures `bench` prints: rank 0's profile, and the ranks' rates, memory and waits gathered
/// in one sum (every rank contributes its own slots).
struct BenchResult {
    let times: [Double], cpuPerStep: Double, stepSeconds: Double
    let forward: [Double], backward: [Double], flops: Double
    /// Rank 0's FLOP and memory-bound bytes per step, by kind.
    let flopsByKind: [Double], bytesByKind: [Double]
    let imagesPerSecond: Double, maxRSS: Double, totalRSS: Double
    let convGflops: Double, stepGflops: Double, sgemm: Double, bf16Peak: Double, convShare: Double
    let waitsByRank: [[Double]], collectiveMax: Double
    /// Each step's allreduces as a run with more than one rank makes them: BatchNorm's
    /// per-channel sums in Float64, then the gradient of every parameter in Float32.
    let doubleCounts: [Int], floatCounts: [Int]
    let precisionLine: String?
    /// The gradient buckets' sizes (in tensors) and how long before the backward's end each started.
    let bucketCounts: [Int], bucketLeadMs: [Double]

    init(_ t: Bench.StepTimes, _ s: Bench.Setup, _ comm: Communicator, sgemm: Double, bf16Peak: Double, threads: Int) {
        let steps = t.times.count
        times = t.times; cpuPerStep = t.cpuPerStep
        bucketCounts = s.net.store.buckets?.ranges.map(\.count) ?? []
        bucketLeadMs = s.net.store.buckets?.meanLeadMilliseconds ?? []
        stepSeconds = t.times.sorted()[t.times.count / 2]
        let perStep = 1 / Double(steps)
        forward = s.profile.forward.map { $0 * perStep }
        backward = s.profile.backward.map { $0 * perStep }
        let convKinds = [LayerProfile.Kind.conv.rawValue, LayerProfile.Kind.convTranspose.rawValue]
        let convSeconds = convKinds.reduce(0.0) { [forward, backward] in $0 + forward[$1] + backward[$1] }
        flops = s.profile.convFlops * perStep
        flopsByKind = s.profile.flops.map { $0 * perStep }
        bytesByKind = s.profile.bytes.map { $0 * perStep }
        let rssMB = peakResidentMegabytes()
        let width = 4 + steps
        var slots = [Double](repeating: 0, count: width * comm.size)
        slots[width * comm.rank] = Double(s.local) / stepSeconds
        slots[width * comm.rank + 1] = rssMB
        slots[width * comm.rank + 2] = flops / max(convSeconds, 1e-12)
        slots[width * comm.rank + 3] = flops
        for (i, w) in t.waits.enumerated() { slots[width * comm.rank + 4 + i] = w * 1000 }
        slots.withUnsafeMutableBufferPointer { comm.allreduceSum($0.baseAddress!, count: $0.count) }
        let ranks = 0..<comm.size
        imagesPerSecond = ranks.reduce(0.0) { $0 + slots[width * $1] }
        maxRSS = ranks.map { slots[width * $0 + 1] }.max()!
        totalRSS = ranks.reduce(0.0) { $0 + slots[width * $1 + 1] }
        convGflops = ranks.reduce(0.0) { $0 + slots[width * $1 + 2] } / Double(comm.size) / 1e9
        stepGflops = ranks.reduce(0.0) { $0 + slots[width * $1 + 3] } / stepSeconds / 1e9
        waitsByRank = ranks.map { Array(slots[(width * $0 + 4)..<(width * ($0 + 1))]) }
        // The rank that spent the longest in collectives waited most for the others.
        collectiveMax = waitsByRank.map { $0.reduce(0, +) / Double(steps) }.max()!
        self.sgemm = sgemm; self.bf16Peak = bf16Peak
        // The convolution layers' rate against the bf16 peak of all of a rank's threads (the
        // peak in CPU time, the layers in wall time: on a shared machine the share reads low).
        convShare = bf16Peak > 0 ? convGflops / (bf16Peak * Double(threads)) : 0
        doubleCounts = s.recorder.counts
        floatCounts = [s.net.store.parameterCount]
        precisionLine = s.precisionLine
    }
}

/// Each layer kind's rate against its own peak, from rank 0's profile: the convolutions' FLOP/s
/// against the FMA peak of the rank's threads (vdpbf16ps's with bf16, else one-thread sgemm's),
/// the memory-bound kinds' bytes/s (`LayerProfile.bytes`) against the triad bandwidth.
struct PeakShares {
    struct Row { let kind: LayerProfile.Kind, rate: Double, share: Double }
    let rows: [Row], bandwidth: Double, convPeak: Double, bf16: Bool

    init(_ r: BenchResult, sgemm: Double, bf16Peak: Double, bandwidth: Double, threads: Int, bf16: Bool) {
        self.bandwidth = bandwidth; self.bf16 = bf16
        convPeak = (bf16 ? bf16Peak : sgemm) * Double(threads)
        var rows: [Row] = []
        for kind in LayerProfile.Kind.allCases {
            let seconds = r.forward[kind.rawValue] + r.backward[kind.rawValue]
            let amount = kind.isConvolution ? r.flopsByKind[kind.rawValue] : r.bytesByKind[kind.rawValue]
            let peak = kind.isConvolution ? convPeak : bandwidth
            guard seconds > 0, amount > 0, peak > 0 else { continue }
            let rate = amount / seconds / 1e9
            rows.append(Row(kind: kind, rate: rate, share: rate / peak))
        }
        self.rows = rows
    }
}

extension LayerProfile.Kind {
    var isConvolution: Bool { self == .conv || self == .convTranspose }
}

/// This program's peak resident set in MB: VmHWM in /proc/self/status, the high-water mark of
/// the memory it has had since it started; else ru_maxrss, which on Linux carries a parent's
/// peak over fork and exec (a bench started by a large process would read the parent's).
func peakResidentMegabytes() -> Double {
    if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
       let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
       let kB = Double(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") {
        return kB / 1024
    }
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_maxrss) / 1024
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
