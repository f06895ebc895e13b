// A large array of Float that lives in memory when it is small and in an unlinked temporary file
// when it is not, for sums that cannot stream (a 7B model's per-weight gradient sums: 26 GB as
// F32). The file is mapped shared; every access is to one slice, whose pages leave the process's
// resident memory when the access ends (the page cache and the disk keep them), so the process
// holds one slice at a time however large the array.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public final class ScratchFloats {
    public let count: Int
    /// Whether the values live in a temporary file rather than in memory.
    public let onDisk: Bool
    private let base: UnsafeMutablePointer<Float>
    private let byteCount: Int

    /// `count` zeros; in memory up to `memoryLimit` bytes, else in a temporary file under
    /// `$TMPDIR` (refused with the size when the disk cannot hold it).
    public init(count: Int, memoryLimit: Int, name: String) throws {
        precondition(count >= 0)
        self.count = count
        byteCount = max(count, 1) * MemoryLayout<Float>.stride
        if byteCount <= memoryLimit {
            onDisk = false
            guard let p = calloc(byteCount, 1) else {
                throw TensorIOError.io("\(name): cannot allocate \(byteCount) bytes")
            }
            base = p.bindMemory(to: Float.self, capacity: max(count, 1))
            return
        }
        onDisk = true
        let dir = temporaryDirectoryPath()
        var template = Array("\(dir)/prunekit-scratch-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw TensorIOError.io("\(name): cannot create a temporary file in \(dir): \(errnoText())") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        defer { close(fd) }  // the map keeps the file
        // Reserve the blocks now, so that a full disk is one clear error here rather than a
        // SIGBUS at some later store into the map.
        let reserved = posix_fallocate(fd, 0, off_t(byteCount))
        guard reserved == 0 else {
            throw TensorIOError.io("\(name): \(byteCount) bytes of scratch space in \(dir): \(String(cString: strerror(reserved)))")
        }
        guard let p = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw TensorIOError.io("\(name): cannot map \(byteCount) bytes of scratch space: \(errnoText())")
        }
        base = p.bindMemory(to: Float.self, capacity: count)
    }

    deinit {
        if onDisk { munmap(base, byteCount) } else { free(base) }
    }

    /// Reads or updates values `range` (elements); on disk, their pages leave resident memory
    /// afterwards.
    public func withSlice<R>(_ range: Range<Int>, _ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        precondition(range.lowerBound >= 0 && range.upperBound <= count)
        defer { if onDisk { release(range) } }
        return try body(UnsafeMutableBufferPointer(start: base + range.lowerBound, count: range.count))
    }

    /// Drops the pages of elements `range` from the process (the data stays in the file).
    private func release(_ range: Range<Int>) {
        dropResidentPages(UnsafeRawPointer(base), bytes: (range.lowerBound * 4)..<(range.upperBound * 4))
    }
}
