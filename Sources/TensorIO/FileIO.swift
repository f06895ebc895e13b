// Byte sources and sinks over POSIX file descriptors, memory maps, and a buffer that spills to
// an unlinked temporary file when it grows large. Plain read/write/mmap rather than FileHandle:
// FileHandle reads allocate a Data per call and cannot report EOF apart from errors.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

func errnoText() -> String { String(cString: strerror(errno)) }

/// Something to read bytes from, in order.
protocol ByteSource: AnyObject {
    /// Reads up to `buffer.count` bytes; returns 0 only at the (verified) end of the input.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int
}

extension ByteSource {
    /// Reads until `buffer` is full or the input ends; returns the bytes read.
    func readFully(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        var done = 0
        while done < buffer.count {
            let n = try read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Reads and discards the rest of the input, counting it (up to `limit`, then stops).
    func drain(limit: Int) throws -> Int {
        var total = 0
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
        defer { chunk.deallocate() }
        while total < limit {
            let n = try read(into: chunk)
            if n == 0 { break }
            total += n
        }
        return total
    }
}

/// Reads a file descriptor (file or pipe); does not close it unless it owns it.
final class FileDescriptorSource: ByteSource {
    let fd: Int32
    let name: String
    private let owns: Bool

    init(fd: Int32, name: String, owns: Bool) {
        self.fd = fd
        self.name = name
        self.owns = owns
    }

    deinit { if owns { close(fd) } }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        while true {
            let n = Glibc.read(fd, base, buffer.count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            throw TensorIOError.io("\(name): read failed: \(errnoText())")
        }
    }
}

/// Reads from memory that the caller keeps alive (a prefix already read, then the rest).
final class ChainedSource: ByteSource {
    private var prefix: [UInt8]
    private var position = 0
    private let rest: ByteSource

    init(prefix: [UInt8], rest: ByteSource) {
        self.prefix = prefix
        self.rest = rest
    }

    func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        if position < prefix.count {
            let n = min(buffer.count, prefix.count - position)
            prefix.withUnsafeBytes {
                buffer.baseAddress?.copyMemory(from: $0.baseAddress! + position, byteCount: n)
            }
            position += n
            return n
        }
        return try rest.read(into: buffer)
    }
}

/// How messages name a path: "-" (standard input) is "<stdin>".
public func shownName(_ path: String) -> String { path == "-" ? "<stdin>" : path }

/// Opens `path` for reading ("-" is standard input), with typed errors.
func openForReading(_ path: String) throws -> FileDescriptorSource {
    if path == "-" { return FileDescriptorSource(fd: 0, name: shownName(path), owns: false) }
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
        if errno == ENOENT { throw TensorIOError.missing("\(path): no such file") }
        throw TensorIOError.io("\(path): cannot open: \(errnoText())")
    }
    var st = stat()
    if fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
        close(fd)
        throw TensorIOError.missing("\(path): is a directory, not a file")
    }
    return FileDescriptorSource(fd: fd, name: path, owns: true)
}

/// Writes all of `bytes` to `fd`, retrying short writes and EINTR.
func writeAll(fd: Int32, _ bytes: UnsafeRawBufferPointer, name: String) throws {
    guard var p = bytes.baseAddress else { return }
    var left = bytes.count
    while left > 0 {
        let n = write(fd, p, left)
        if n < 0 {
            if errno == EINTR { continue }
            throw TensorIOError.io("\(name): write failed: \(errnoText())")
        }
        p += n
        left -= n
    }
}

/// Bytes that stay valid while the owner lives: a read-only memory map or heap memory.
final class ByteRegion {
    let bytes: UnsafeRawBufferPointer
    private let unmap: () -> Void
    /// A map of a file (not heap memory): its pages can be dropped and are read again on use.
    private let mapped: Bool

    init(bytes: UnsafeRawBufferPointer, mapped: Bool = false, release: @escaping () -> Void) {
        self.bytes = bytes
        self.mapped = mapped
        self.unmap = release
    }

    deinit { unmap() }

    /// Takes the whole pages inside `range` out of the process's resident memory (they stay in
    /// the page cache; the next read maps them again). A tool that reads a 13 GB model tensor by
    /// tensor would otherwise keep every page it touched resident until the map goes: its peak
    /// RSS would be the file's size. No-op on heap memory, whose contents would be lost.
    func dropPages(_ range: Range<Int>) {
        guard mapped, let base = bytes.baseAddress else { return }
        dropResidentPages(base, bytes: range)
    }

    /// Maps `length` bytes of `fd` read-only (a zero-length file maps to an empty region).
    static func map(fd: Int32, length: Int, name: String) throws -> ByteRegion {
        if length == 0 { return ByteRegion(bytes: UnsafeRawBufferPointer(start: nil, count: 0)) {} }
        guard let p = mmap(nil, length, PROT_READ, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw TensorIOError.io("\(name): cannot map \(length) bytes: \(errnoText())")
        }
        // Tensors are read front to back, mostly once.
        _ = madvise(p, length, MADV_SEQUENTIAL)
        return ByteRegion(bytes: UnsafeRawBufferPointer(start: p, count: length), mapped: true) {
            munmap(p, length)
        }
    }
}

/// Collects a stream of bytes in memory up to `memoryLimit`, then moves them to an unlinked
/// temporary file (so that a large decompressed model is paged by the OS rather than held in
/// RAM, and nothing is left behind however the process ends), which it maps at the end.
final class SpillBuffer {
    private let memoryLimit: Int
    private var memory: UnsafeMutableRawPointer?
    private var capacity = 0
    private(set) var count = 0
    private var fd: Int32 = -1
    private let name: String
    private var spillAtOnce: Bool

    init(memoryLimit: Int, expectedSize: Int?, name: String) {
        self.memoryLimit = memoryLimit
        self.name = name
        // The size a frame header announces is a hint only: it never allocates beyond the limit,
        // and a large one just sends the bytes to the temporary file from the start.
        spillAtOnce = (expectedSize ?? 0) > memoryLimit
        if let e = expectedSize, e > 0, e <= memoryLimit { grow(to: e) }
    }

    deinit {
        free(memory)
        if fd >= 0 { close(fd) }
    }

    private func grow(to minimum: Int) {
        var newCapacity = max(capacity, 1 << 16)
        while newCapacity < minimum { newCapacity = newCapacity * 2 }
        newCapacity = min(max(newCapacity, minimum), max(memoryLimit, minimum))
        memory = realloc(memory, newCapacity)
        capacity = newCapacity
    }

    /// Space for at least `minimum` more bytes, to be committed with `commit(_:)`.
    func reserve(_ minimum: Int) throws -> UnsafeMutableRawBufferPointer {
        if fd < 0 && (spillAtOnce || count + minimum > memoryLimit) { try spill() }
        if fd >= 0 {
            if capacity < minimum { grow(to: minimum) }
            return UnsafeMutableRawBufferPointer(start: memory, count: capacity)
        }
        if count + minimum > capacity { grow(to: count + minimum) }
        guard let memory else { throw TensorIOError.io("\(name): out of memory") }
        return UnsafeMutableRawBufferPointer(start: memory + count, count: capacity - count)
    }

    /// Commits `n` bytes written into the space `reserve` returned.
    func commit(_ n: Int) throws {
        if fd >= 0 {
            try writeAll(fd: fd, UnsafeRawBufferPointer(start: memory, count: n), name: name)
        }
        count += n
    }

    private func spill() throws {
        let dir = temporaryDirectoryPath()
        var template = Array("\(dir)/prunekit-spill-XXXXXX".utf8CString)
        let f = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard f >= 0 else {
            throw TensorIOError.io("cannot create a temporary file in \(dir): \(errnoText())")
        }
        // Unlinked at once: the open descriptor keeps the data; no path can be left behind.
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        fd = f
        if count > 0 {
            try writeAll(fd: fd, UnsafeRawBufferPointer(start: memory, count: count),
                         name: "\(dir) (temporary file)")
        }
        // From now on `memory` is a staging chunk.
        free(memory)
        memory = nil
        capacity = 0
        grow(to: 1 << 22)
    }

    /// The collected bytes, as a region that outlives this buffer.
    func finish() throws -> ByteRegion {
        if fd >= 0 {
            free(memory)
            memory = nil
            let region = try ByteRegion.map(fd: fd, length: count, name: "temporary file")
            close(fd)
            fd = -1
            return region
        }
        let p = memory
        memory = nil
        capacity = 0
        return ByteRegion(bytes: UnsafeRawBufferPointer(start: p, count: count)) { free(p) }
    }
}

/// `$TMPDIR`, else /tmp.
func temporaryDirectoryPath() -> String {
    if let t = getenv("TMPDIR") {
        let s = String(cString: t)
        if !s.isEmpty { return s.hasSuffix("/") && s.count > 1 ? String(s.dropLast()) : s }
    }
    return "/tmp"
}

/// Whether the file at `path` begins with the GGUF magic "GGUF" (a file too short to hold it
/// does not); a file that cannot be opened is an error naming it.
/// Whether `path` names a regular file (not a pipe, socket or device), following links.
public func isRegularFile(_ path: String) -> Bool {
    var st = stat()
    return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
}

public func isGGUFFile(path: String) throws -> Bool {
    let source = try openForReading(path)
    var head = [UInt8](repeating: 0, count: 4)
    let n = try head.withUnsafeMutableBytes { try source.readFully(into: $0) }
    return n == 4 && head == Array("GGUF".utf8)
}


/// `madvise(MADV_DONTNEED)` on the whole pages inside bytes `range` from `base` of a file map:
/// they leave the process's resident memory, the file (and the page cache) keeps their data.
func dropResidentPages(_ base: UnsafeRawPointer, bytes range: Range<Int>) {
    guard !range.isEmpty else { return }
    let page = Int(sysconf(Int32(_SC_PAGESIZE)))
    let start = (Int(bitPattern: base) + range.lowerBound + page - 1) / page * page
    let end = (Int(bitPattern: base) + range.upperBound) / page * page
    guard end > start, let p = UnsafeMutableRawPointer(bitPattern: start) else { return }
    _ = madvise(p, end - start, MADV_DONTNEED)
}
