import Foundation

/// Ends a rank that has made no progress for too long: a peer that stopped without dying
/// (`kill -STOP`, a node swapping, a lost network link) otherwise leaves every other rank
/// spinning in a collective for ever. Progress is a collective completed, a step begun or a
/// unit of work done outside collectives; the communicator and the training loop report it
/// here. A rank blocked in MPI spins on its CPU, so the watch runs on a thread of its own.
///
/// Everything a rank reports is kept as a few integers and static strings behind a lock, so
/// reporting costs a lock and a clock read and never allocates (a training step allocates
/// nothing after its first).
public enum Watchdog {
    /// What mpirun, srun and a shell report for a rank killed with SIGKILL (128 + 9): a stalled
    /// rank ends the job as a dead one does, so that launchers and SLURM treat both alike, and
    /// never as the requeue status 75.
    public static let exitStatus: Int32 = 137

    private final class State {
        let lock = NSLock()
        var last = now()
        var epoch = 0, step = 0, steps = 0
        /// What the rank does besides a training step; empty during a step.
        var phase: StaticString = "setup"
        /// The collective this rank waits in, or the last one it completed.
        var collective: StaticString = "", label: StaticString = ""
        var waiting = false
    }

    private static let state = State()
    private static var started = false

    /// Starts watching this process; at most once. A rank with no progress for `timeout`
    /// seconds prints one line to stderr and exits with `exitStatus`.
    public static func start(timeout: Double, rank: Int) {
        precondition(!started && timeout > 0)
        started = true
        state.lock.lock(); state.last = now(); state.lock.unlock()
        let thread = Thread { watch(timeout: timeout, rank: rank) }
        thread.name = "unet-dist.watchdog"
        thread.start()
    }

    /// Work moved on: a step began, a file was read, a batch was scored.
    public static func progress() {
        let t = now()
        state.lock.lock(); state.last = t; state.lock.unlock()
    }

    /// Training is at `step` (from 1) of `steps` in `epoch`; counts as progress.
    public static func at(epoch: Int, step: Int, of steps: Int) {
        let t = now()
        state.lock.lock()
        state.epoch = epoch; state.step = step; state.steps = steps; state.phase = ""; state.last = t
        state.lock.unlock()
    }

    /// What the rank does next besides training steps ("evaluation", "saving"); counts as progress.
    public static func phase(_ name: StaticString) {
        let t = now()
        state.lock.lock(); state.phase = name; state.last = t; state.lock.unlock()
    }

    /// A collective (`collective`: "allreduce", "broadcast") for `label` (what it carries, may be
    /// empty) is about to wait for the other ranks.
    public static func entering(_ collective: StaticString, _ label: StaticString) {
        state.lock.lock()
        state.collective = collective; state.label = label; state.waiting = true
        state.lock.unlock()
    }

    /// The collective begun with `entering` completed: every rank reached it.
    public static func left() {
        let t = now()
        state.lock.lock(); state.waiting = false; state.last = t; state.lock.unlock()
    }

    /// The line a stalled rank prints, e.g. `rank 0: no progress for 20 s at epoch 2, step 3/10,
    /// waiting in allreduce (BatchNorm statistics)`.
    static func message(rank: Int, seconds: Double) -> String {
        state.lock.lock(); defer { state.lock.unlock() }
        var place = state.epoch > 0 ? " at epoch \(state.epoch)" : ""
        place += state.phase.utf8CodeUnitCount == 0 ? ", step \(state.step)/\(state.steps)" : " (\(state.phase))"
        var what = "\(state.collective)"
        if state.label.utf8CodeUnitCount > 0 { what += " (\(state.label))" }
        let doing = state.waiting ? "waiting in \(what): another rank stopped or cannot be reached"
            : what.isEmpty ? "busy outside any collective" : "busy outside any collective since \(what) completed"
        return "rank \(rank): no progress for \(Int(seconds)) s\(place), \(doing); "
            + "ending the job (--stall-timeout)"
    }

    private static func watch(timeout: Double, rank: Int) {
        // Checked every second, or four times per timeout below 4 s: the line comes at most
        // that late.
        let interval = min(1, timeout / 4)
        var woke = now()
        while true {
            Thread.sleep(forTimeInterval: interval)
            let t = now()
            state.lock.lock()
            // A sleep that overran by seconds means this process itself was stopped (kill -STOP,
            // `scontrol suspend` of the whole job): the count starts again rather than blaming
            // the peers the moment it continues.
            if t - woke > interval + 2 { state.last = t }
            woke = t
            let idle = t - state.last
            state.lock.unlock()
            guard idle >= timeout else { continue }
            fire(Data("error: \(message(rank: rank, seconds: idle))\n".utf8))
        }
    }

    /// MPI_Abort from this thread would need MPI_THREAD_MULTIPLE, which MPI need not grant (the
    /// main thread makes every other call, and may be inside MPI, where it may never return).
    /// The line goes out with write(2), unbuffered and lock-free, and _exit ends the process at
    /// once: mpirun then ends the other ranks, as for a rank that died. A checkpoint being written
    /// is safe: files are written to a temporary name and renamed, so the last one stays whole
    /// and the next run removes the temporary file.
    private static func fire(_ line: Data) -> Never {
        line.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = write(2, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                offset += n
            }
        }
        _exit(exitStatus)
    }

    /// Seconds on the monotonic clock, which a suspended machine does not advance.
    private static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
    }
}
