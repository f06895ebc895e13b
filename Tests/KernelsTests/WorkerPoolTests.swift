import Foundation
import Kernels
import XCTest

/// The workers behind every parallel region (`BLAS.parallelBlocks` on `WorkerPool`).
final class WorkerPoolTests: XCTestCase {
    /// Runs parallelBlocks(count) and returns how many times each block ran.
    func runCounts(_ count: Int) -> [Int] {
        let counts = UnsafeMutablePointer<Int>.allocate(capacity: max(count, 1))
        counts.initialize(repeating: 0, count: max(count, 1))
        defer { counts.deallocate() }
        BLAS.parallelBlocks(count) { counts[$0] += 1 }  // each block is one slot: no two threads share one
        return Array(UnsafeBufferPointer(start: counts, count: count))
    }

    func testEveryBlockRunsOnceAtEveryThreadCount() {
        let before = BLAS.threads
        defer { BLAS.setThreads(before) }
        for threads in [2, 3, 1, 2] {  // the pool is replaced when the count changes
            BLAS.setThreads(threads)
            for count in [0, 1, 2, 3, 17, 1000] {
                XCTAssertEqual(runCounts(count), [Int](repeating: 1, count: count), "threads \(threads), blocks \(count)")
            }
        }
    }

    /// Many short regions in a row (the decoding pattern: each starts while the workers spin), and
    /// regions after the workers have gone to sleep (a pause longer than their spin).
    func testBackToBackRegionsAndRegionsAfterSleep() {
        let before = BLAS.threads
        defer { BLAS.setThreads(before) }
        BLAS.setThreads(2)
        var wrong = 0
        for _ in 0..<20000 where runCounts(2) != [1, 1] { wrong += 1 }
        XCTAssertEqual(wrong, 0, "regions where a block ran other than once")
        for _ in 0..<5 {
            usleep(2000)
            XCTAssertEqual(runCounts(7), [Int](repeating: 1, count: 7))
        }
    }

    /// A region inside a region runs on the calling thread, in turn; two threads outside the pool
    /// calling at once both get all their blocks run (the second runs its blocks alone).
    func testNestedAndConcurrentCallers() {
        let before = BLAS.threads
        defer { BLAS.setThreads(before) }
        BLAS.setThreads(2)
        let inner = UnsafeMutablePointer<Int>.allocate(capacity: 4 * 5)
        inner.initialize(repeating: 0, count: 20)
        defer { inner.deallocate() }
        BLAS.parallelBlocks(4) { i in
            let caller = pthread_self()
            BLAS.parallelBlocks(5) { j in
                XCTAssertTrue(pthread_equal(pthread_self(), caller) != 0, "nested block ran on another thread")
                inner[i * 5 + j] += 1
            }
        }
        XCTAssertEqual(Array(UnsafeBufferPointer(start: inner, count: 20)), [Int](repeating: 1, count: 20))

        final class Results: @unchecked Sendable {
            let lock = NSLock()
            var lists: [[Int]] = []
        }
        let results = Results()
        for _ in 0..<2 {
            Thread.detachNewThread {
                var local: [Int] = []
                for _ in 0..<2000 where self.runCounts(9) != [Int](repeating: 1, count: 9) { local.append(1) }
                results.lock.withLock { results.lists.append(local) }
            }
        }
        usleep(1000)
        var wrong = 0
        for _ in 0..<2000 where runCounts(9) != [Int](repeating: 1, count: 9) { wrong += 1 }
        XCTAssertEqual(wrong, 0, "regions of the test thread where a block ran other than once")
        while results.lock.withLock({ results.lists.count }) < 2 { usleep(1000) }
        XCTAssertEqual(results.lists.map(\.count), [0, 0], "regions of the other callers where a block ran other than once")
    }
}
