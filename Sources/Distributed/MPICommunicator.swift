import CMPI
import Foundation

/// Open MPI over MPI_COMM_WORLD. Initialized once per process; `finalize` must be called on
/// every normal exit path (abort covers the others).
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    public let localSize: Int
    private var finalized = false
    /// The started sums' requests (`startAllreduceSum`); grown, never shrunk, so that a step
    /// that starts no more sums than an earlier one allocates nothing.
    private var requests = UnsafeMutablePointer<MPI_Request?>.allocate(capacity: 1)
    private var requestCapacity = 1, started = 0

    public init() {
        var provided: Int32 = 0
        MPI_Init_thread(nil, nil, Int32(MPI_THREAD_FUNNELED), &provided)
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(cmpi_comm_world(), &r)
        MPI_Comm_size(cmpi_comm_world(), &s)
        rank = Int(r); size = Int(s)
        var node: MPI_Comm? = nil
        MPI_Comm_split_type(cmpi_comm_world(), cmpi_comm_type_shared(), r, cmpi_info_null(), &node)
        var ls: Int32 = 1
        MPI_Comm_size(node, &ls)
        MPI_Comm_free(&node)
        localSize = Int(ls)
    }

    // The Watchdog names the collective a stalled rank waits in, and counts each completion as
    // progress.

    public func allreduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, what: StaticString) {
        Watchdog.entering("allreduce", what)
        MPI_Allreduce(cmpi_in_place(), values, Int32(count), cmpi_float(), cmpi_sum(), cmpi_comm_world())
        Watchdog.left()
    }

    public func allreduceSum(_ values: UnsafeMutablePointer<Double>, count: Int, what: StaticString) {
        Watchdog.entering("allreduce", what)
        MPI_Allreduce(cmpi_in_place(), values, Int32(count), cmpi_double(), cmpi_sum(), cmpi_comm_world())
        Watchdog.left()
    }

    // A started sum runs as Open MPI's non-blocking collective (libnbc); under
    // MPI_THREAD_FUNNELED nothing advances it but MPI calls of this thread: the blocking ones
    // (BatchNorm's sums) and `progressStarted` between blocks (docs/scaling.md, Overlap).

    public func startAllreduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, what: StaticString) {
        if started == requestCapacity {
            let grown = UnsafeMutablePointer<MPI_Request?>.allocate(capacity: 2 * requestCapacity)
            grown.update(from: requests, count: started)
            requests.deallocate()
            requests = grown; requestCapacity *= 2
        }
        requests[started] = cmpi_request_null()
        MPI_Iallreduce(cmpi_in_place(), values, Int32(count), cmpi_float(), cmpi_sum(), cmpi_comm_world(),
                       requests + started)
        started += 1
    }

    public func progressStarted() {
        guard started > 0 else { return }
        var done: Int32 = 0
        MPI_Testall(Int32(started), requests, &done, cmpi_statuses_ignore())
    }

    public func waitForStarted(what: StaticString) {
        guard started > 0 else { return }
        Watchdog.entering("allreduce", what)
        MPI_Waitall(Int32(started), requests, cmpi_statuses_ignore())
        Watchdog.left()
        started = 0
    }

    public func broadcast(_ bytes: UnsafeMutableRawPointer, count: Int, root: Int, what: StaticString) {
        // MPI counts are 32-bit: send large buffers in chunks.
        var offset = 0
        while offset < count {
            let n = min(count - offset, 1 << 30)
            Watchdog.entering("broadcast", what)
            MPI_Bcast(bytes + offset, Int32(n), cmpi_byte(), Int32(root), cmpi_comm_world())
            Watchdog.left()
            offset += n
        }
    }

    public func barrier() {
        Watchdog.entering("barrier", "")
        MPI_Barrier(cmpi_comm_world())
        Watchdog.left()
    }

    public func abort(code: Int32) -> Never {
        fflush(stdout); fflush(stderr)
        MPI_Abort(cmpi_comm_world(), code)
        exit(code)
    }

    public func finalize() {
        guard !finalized else { return }
        finalized = true
        Watchdog.entering("MPI_Finalize", "")
        MPI_Finalize()
    }
}
