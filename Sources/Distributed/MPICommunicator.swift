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
        // libnbc sums an in-place buffer up a binomial tree and broadcasts it back down:
        // 2 log2(P) times the bytes, and on 2 ranks the two directions one after the other.
        // Reduce-scatter + allgather sends 2 (P-1)/P times the bytes, as the blocking allreduce
        // does for large buffers (docs/scaling.md, Overlap). A setting of the launcher's wins.
        setenv("OMPI_MCA_coll_libnbc_iallreduce_algorithm", "3", 0)
        // MPI_THREAD_MULTIPLE for the thread that moves the started sums on; every other call
        // comes from the main thread, as under MPI_THREAD_FUNNELED.
        MPI_Init_thread(nil, nil, Int32(MPI_THREAD_MULTIPLE), &provided)
        threadMultiple = provided >= Int32(MPI_THREAD_MULTIPLE)
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

    // A started sum runs as Open MPI's non-blocking collective (libnbc), which moves on only
    // inside MPI calls: the blocking ones this thread makes (BatchNorm's sums), `progressStarted`
    // between blocks, and, where MPI grants MPI_THREAD_MULTIPLE, a thread that tests the started
    // sums every `pollInterval` until they are waited for (docs/scaling.md, Overlap). Without it
    // a sum moves a few fragments per call and mostly completes in `waitForStarted`.

    public func startAllreduceSum(_ values: UnsafeMutablePointer<Float>, count: Int, what: StaticString) {
        lock.lock()
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
        let wake = threadMultiple && !polling
        polling = true
        lock.unlock()
        if wake { startPolling() }
    }

    public func progressStarted() {
        guard !threadMultiple, started > 0 else { return }
        var done: Int32 = 0
        MPI_Testall(Int32(started), requests, &done, cmpi_statuses_ignore())
    }

    public func waitForStarted(what: StaticString) {
        lock.lock(); defer { lock.unlock() }
        polling = false
        guard started > 0 else { return }
        Watchdog.entering("allreduce", what)
        MPI_Waitall(Int32(started), requests, cmpi_statuses_ignore())
        Watchdog.left()
        started = 0
    }

    /// Seconds between the polling thread's tests of the started sums.
    public static let pollInterval = 200e-6
    private let threadMultiple: Bool
    /// Guards `requests`, `started` and `polling` between this thread and the polling thread.
    private let lock = NSLock()
    private var polling = false
    private let wakePoller = DispatchSemaphore(value: 0)
    private var poller: Thread?

    private func startPolling() {
        if poller == nil {
            let thread = Thread { [unowned self] in poll() }
            thread.name = "unet-dist.progress"
            poller = thread
            thread.start()
        }
        wakePoller.signal()
    }

    private func poll() {
        let interval = useconds_t(Self.pollInterval * 1e6)
        while true {
            wakePoller.wait()
            while true {
                lock.lock()
                guard polling else { lock.unlock(); break }
                var done: Int32 = 0
                MPI_Testall(Int32(started), requests, &done, cmpi_statuses_ignore())
                // All done: the next sum started wakes this thread again.
                if done != 0 { polling = false }
                lock.unlock()
                if done != 0 { break }
                usleep(interval)
            }
        }
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
        lock.lock(); polling = false; lock.unlock()
        Watchdog.entering("MPI_Finalize", "")
        MPI_Finalize()
    }
}
