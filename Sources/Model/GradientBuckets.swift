import Distributed

/// The gradient sum in buckets, each started as soon as the backward has finished its
/// gradients, so that the sum of the late layers' gradients runs while the backward computes
/// the early ones' (PyTorch DDP's scheme; docs/scaling.md, Overlap).
///
/// A bucket is a contiguous range of the gradient arena, whole tensors from its end: parameters
/// are registered in forward order and the backward runs in reverse, so the arena's tail is
/// final first. The models report how far down the arena their backward has come
/// (`SegmentationModel.gradientsFinal`) at block boundaries, at the same points on every rank,
/// and the buckets start in one fixed order: every rank makes the same calls in the same order.
public final class GradientBuckets {
    let comm: Communicator
    unowned let store: ParameterStore
    /// The buckets in the order they start: from the arena's end to its start.
    public let ranges: [Range<Int>]
    private var next = 0
    /// Whether the backward that runs next completes the step's gradients: with micro-batches
    /// (`--accumulate`) only the last one's may start the sums, the others' gradients are partial.
    public var armed = true
    /// `--bucket-mb`'s default.
    public static let defaultMegabytes = 0.5
    /// Per bucket, the seconds from its start to the backward's end (`finish`), summed over
    /// `finishes` steps: how long the backward can hide its sum (`unet-dist bench`).
    public private(set) var leadSeconds: [Double]
    public private(set) var finishes = 0
    private var startedAt: [Double]

    /// Buckets of at least `megabytes` (MiB) of gradients each, but for the arena's first.
    public init(store: ParameterStore, comm: Communicator, megabytes: Double) {
        precondition(megabytes > 0)
        self.store = store; self.comm = comm
        let least = max(1, Int(megabytes * 262_144))
        var ranges: [Range<Int>] = [], end = store.parameterCount
        for view in store.parameters.reversed() where end - view.offset >= least {
            ranges.append(view.offset..<end); end = view.offset
        }
        if end > 0 { ranges.append(0..<end) }
        self.ranges = ranges
        leadSeconds = [Double](repeating: 0, count: ranges.count)
        startedAt = [Double](repeating: 0, count: ranges.count)
    }

    /// Gradients from `offset` to the arena's end are final: starts every bucket within them,
    /// and lets those started earlier move on.
    func ready(from offset: Int) {
        guard armed else { return }
        while next < ranges.count && ranges[next].lowerBound >= offset { start(next); next += 1 }
        comm.progressStarted()
    }

    /// Starts what the backward has not, and waits for every bucket; then armed for the next step.
    func finish() {
        let end = LayerProfile.now()
        for i in 0..<next { leadSeconds[i] += end - startedAt[i] }
        finishes += 1
        while next < ranges.count { start(next); next += 1 }
        comm.waitForStarted(what: "gradient buckets")
        next = 0; armed = true
    }

    public var meanLeadMilliseconds: [Double] { leadSeconds.map { $0 * 1000 / Double(max(finishes, 1)) } }

    public func resetLeads() {
        for i in leadSeconds.indices { leadSeconds[i] = 0 }
        finishes = 0
    }

    private func start(_ i: Int) {
        startedAt[i] = LayerProfile.now()
        comm.startAllreduceSum(store.grads + ranges[i].lowerBound, count: ranges[i].count, what: "gradient buckets")
    }
}

extension SegmentationModel {
    /// The backward has finished every gradient from `offset` in the arena onward.
    func gradientsFinal(from offset: Int) {
        guard let buckets = store.buckets, buckets.armed else { return }
        context.collective { buckets.ready(from: offset) }
    }

    /// Every parameter's gradient summed over the ranks: in buckets where `store.buckets` is set
    /// (some started during the backward), else in one allreduce.
    public func sumGradients(_ comm: Communicator) {
        guard let buckets = store.buckets else {
            return comm.allreduceSum(store.grads, count: store.parameterCount, what: "gradients")
        }
        precondition(buckets.comm === comm, "the gradient buckets belong to another communicator")
        buckets.finish()
    }

    /// Sums the gradients in buckets of `megabytes` (MiB) started during the backward; 0: in one
    /// allreduce after it. One process has nothing to sum, but `timing` keeps the buckets there
    /// to time when they would start (`unet-dist bench`).
    public func useGradientBuckets(megabytes: Double, comm: Communicator, timing: Bool = false) {
        let used = megabytes > 0 && (comm.size > 1 || timing)
        store.buckets = used ? GradientBuckets(store: store, comm: comm, megabytes: megabytes) : nil
    }
}
