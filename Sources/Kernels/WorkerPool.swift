// The workers every parallel region of this module runs on: threads − 1 threads of our own that
// stay alive between regions, plus the calling thread.
//
// Why not libdispatch: decoding one token runs about 130 regions of 20–200 µs each (seven linear
// maps, attention, per layer), and waking a sleeping dispatch worker (a futex wake and a context
// switch) cost about a tenth of a token's time. Here a worker that has just finished a region
// spins for a short while (`spinLimit`, with the CPU's pause hint) watching for the next one, and
// only then sleeps on a condition variable; a region posted while it spins starts at once.
//
// Protocol: the caller publishes a region (its body and block count) and bumps `generation`; every
// worker, seeing the new generation, takes blocks from the shared counter until none are left,
// then checks out (`pending` − 1); the caller takes blocks too and returns when every worker has
// checked out, so no worker can still be reading the region when the next is published. Which
// thread runs which block varies; what a block computes does not, so results do not depend on it.
import _CSpin
import Foundation
import Synchronization

final class WorkerPool: @unchecked Sendable {
    /// How long an idle worker watches for the next region before it sleeps.
    static let spinLimit: Double = 200e-6

    private let generation = Atomic<Int>(0)
    private let nextBlock = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    /// The region being run; written only by the caller while every worker is checked out.
    private var body: ((Int) -> Void)?
    private var blockCount = 0
    private var stopping = false

    private let sleepLock = NSCondition()
    /// Held by the thread whose region is running; a second caller (another thread outside the
    /// pool) finds it taken and runs its blocks alone.
    private let callerLock = NSLock()
    private var threads: [pthread_t] = []

    /// The pool with `count` workers (the caller makes count + 1).
    init(workers count: Int) {
        threads = (0..<count).map { _ in
            var thread = pthread_t()
            let context = Unmanaged.passRetained(self).toOpaque()
            let status = pthread_create(&thread, nil, { context in
                let pool = Unmanaged<WorkerPool>.fromOpaque(context!).takeRetainedValue()
                pool.workerLoop()
                return nil
            }, context)
            precondition(status == 0, "pthread_create failed: \(status)")
            return thread
        }
    }

    var workerCount: Int { threads.count }

    /// Runs body(0 ..< count) on the workers and the calling thread; returns when all are done.
    func run(_ count: Int, _ body: (Int) -> Void) {
        guard !threads.isEmpty, callerLock.try() else {
            for i in 0..<count { body(i) }
            return
        }
        defer { callerLock.unlock() }
        withoutActuallyEscaping(body) { body in
            self.body = body
            blockCount = count
            nextBlock.store(0, ordering: .relaxed)
            pending.store(threads.count, ordering: .relaxed)
            post()
            takeBlocks(body, count)
            var spins = 0
            while pending.load(ordering: .acquiring) != 0 {
                spins += 1
                if spins < 1 << 16 { spin_pause() } else { sched_yield() }
            }
            self.body = nil
        }
    }

    /// Stops and joins every worker (the pool is replaced when the thread count changes).
    func shutDown() {
        callerLock.lock()
        stopping = true
        post()
        for t in threads { pthread_join(t, nil) }
        threads = []
        callerLock.unlock()
    }

    /// Publishes a new generation and wakes the sleepers. The bump happens before the lock is
    /// taken, and a worker checks the generation under the lock before it waits: none misses it.
    private func post() {
        generation.add(1, ordering: .sequentiallyConsistent)
        sleepLock.lock()
        sleepLock.broadcast()
        sleepLock.unlock()
    }

    private func takeBlocks(_ body: (Int) -> Void, _ count: Int) {
        while true {
            let i = nextBlock.add(1, ordering: .relaxed).oldValue
            if i >= count { return }
            body(i)
        }
    }

    private func workerLoop() {
        BLAS.markWorkerThread()
        var seen = 0
        while true {
            seen = awaitGeneration(after: seen)
            if stopping { return }
            takeBlocks(body!, blockCount)
            pending.subtract(1, ordering: .releasing)
        }
    }

    /// Spins for up to `spinLimit`, then sleeps, until the generation differs from `seen`.
    private func awaitGeneration(after seen: Int) -> Int {
        let start = monotonicSeconds()
        var spins = 0
        while true {
            let g = generation.load(ordering: .acquiring)
            if g != seen { return g }
            spin_pause()
            spins += 1
            if spins & 63 == 0 && monotonicSeconds() - start > WorkerPool.spinLimit { break }
        }
        sleepLock.lock()
        defer { sleepLock.unlock() }
        while true {
            let g = generation.load(ordering: .acquiring)
            if g != seen { return g }
            sleepLock.wait()
        }
    }
}

private func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}
