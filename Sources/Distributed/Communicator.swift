import Foundation

/// What the ranks of a data-parallel run say to each other. Every rank must make the same
/// calls in the same order; on one process every call is a no-op or a copy.
public protocol Communicator: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// Ranks sharing this rank's node (to divide the node's cores among them).
    var localSize: Int { get }
    /// `what` names what the values are, for the line of a rank that waits too long (Watchdog).
    func allreduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, what: StaticString)
    func allreduceSum(_ values: UnsafeMutablePointer<Double>, count: Int, what: StaticString)
    /// Rank `root`'s bytes replace every other rank's.
    func broadcast(_ bytes: UnsafeMutableRawPointer, count: Int, root: Int, what: StaticString)
    /// Starts a sum of `values` that `waitForStarted` completes; nothing may read or write them
    /// meanwhile. Sums started on every rank in the same order, between the same blocking calls.
    func startAllreduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, what: StaticString)
    /// Lets the started sums move on: Open MPI advances them only inside MPI calls.
    func progressStarted()
    /// Waits for every started sum.
    func waitForStarted(what: StaticString)
    func barrier()
    /// Ends every rank at once (after a failure only some ranks saw).
    func abort(code: Int32) -> Never
    /// Ends the run normally.
    func finalize()
}

extension Communicator {
    public var isRoot: Bool { rank == 0 }

    /// Without non-blocking sums a started sum is done at once.
    public func startAllreduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, what: StaticString) {
        allreduceSum(values, count: count, what: what)
    }

    public func progressStarted() {}
    public func waitForStarted(what: StaticString) {}

    public func allreduceSum(_ values: UnsafeMutablePointer<Float>, count: Int) {
        allreduceSum(values, count: count, what: "")
    }

    public func allreduceSum(_ values: UnsafeMutablePointer<Double>, count: Int) {
        allreduceSum(values, count: count, what: "")
    }

    public func broadcast(_ bytes: UnsafeMutableRawPointer, count: Int, root: Int) {
        broadcast(bytes, count: count, root: root, what: "")
    }

    /// True on every rank when `flag` is true on any.
    public func any(_ flag: Bool) -> Bool {
        var v: Double = flag ? 1 : 0
        allreduceSum(&v, count: 1, what: "stop vote")
        return v > 0
    }

    /// Broadcasts a byte string of any length from `root`.
    public func broadcast(_ data: Data, root: Int = 0, what: StaticString = "") -> Data {
        var n = Int64(rank == root ? data.count : 0)
        broadcast(&n, count: 8, root: root, what: what)
        var bytes = rank == root ? [UInt8](data) : [UInt8](repeating: 0, count: Int(n))
        if n > 0 { bytes.withUnsafeMutableBytes { broadcast($0.baseAddress!, count: Int(n), root: root, what: what) } }
        return Data(bytes)
    }

    public func broadcast(_ values: UnsafeMutablePointer<Float>, count: Int, root: Int = 0, what: StaticString = "") {
        broadcast(UnsafeMutableRawPointer(values), count: count * 4, root: root, what: what)
    }
}

/// One process, no MPI: used when the program is not started by mpirun, and in unit tests.
public final class SingleProcess: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public var localSize: Int { 1 }
    public func allreduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, what: StaticString) {}
    public func allreduceSum(_ values: UnsafeMutablePointer<Double>, count: Int, what: StaticString) {}
    public func broadcast(_ bytes: UnsafeMutableRawPointer, count: Int, root: Int, what: StaticString) {}
    public func barrier() {}
    public func abort(code: Int32) -> Never { exit(code) }
    public func finalize() {}
}

/// Whether this process was started by an MPI launcher (mpirun, srun with PMIx).
public var launchedByMPI: Bool {
    let env = ProcessInfo.processInfo.environment
    return ["OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"].contains { env[$0] != nil }
}

/// The communicator for this process: MPI under a launcher, otherwise a single process.
public func makeCommunicator() -> Communicator {
    launchedByMPI ? MPICommunicator() : SingleProcess()
}
