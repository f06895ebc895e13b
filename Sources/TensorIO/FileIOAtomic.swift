// Atomic output files and the process-wide registry of their temporary paths.
//
// An output is written to a temporary file beside the target (same file system, so rename is
// atomic), fsynced, then renamed over the target: at any moment the target holds either the
// complete old file or the complete new one. The registry lets a SIGINT/SIGTERM handler unlink
// the temporaries of a run that is interrupted, so that no litter remains.
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Fixed slots of C strings, so that the signal handler reads them without locks or allocation.
/// A slot is cleared before its path is forgotten; paths are never freed, since the handler may
/// be reading one on another thread (a few bytes per output file of the process).
private let temporarySlotCount = 256
private let temporarySlots: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = {
    let p = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: temporarySlotCount)
    p.initialize(repeating: nil, count: temporarySlotCount)
    return p
}()
private let temporarySlotsLock = NSLock()

/// Records `path` as a temporary to unlink on interruption; returns its slot.
func registerTemporary(_ path: String) throws -> Int {
    temporarySlotsLock.lock()
    defer { temporarySlotsLock.unlock() }
    for i in 0..<temporarySlotCount where temporarySlots[i] == nil {
        temporarySlots[i] = strdup(path)
        return i
    }
    throw TensorIOError.io("\(path): more than \(temporarySlotCount) output files open at once")
}

/// Forgets the temporary in `slot` (after it was renamed or removed).
func unregisterTemporary(_ slot: Int) {
    temporarySlotsLock.lock()
    temporarySlots[slot] = nil
    temporarySlotsLock.unlock()
}

/// Installs SIGINT/SIGTERM (and SIGHUP) handlers that unlink every registered temporary output
/// and exit 130/143/129 (128 + signal, as a shell reports a signal). Idempotent.
public func installInterruptCleanup() {
    _ = temporarySlots  // initialise the global before any signal can arrive
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { sig in
            // Async-signal-safe only: unlink and _exit.
            for i in 0..<temporarySlotCount {
                if let p = temporarySlots[i] { unlink(p) }
            }
            _exit(128 + sig)
        }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(sig, &action, nil)
    }
}

/// The paths currently registered as temporaries (for tests and diagnostics).
public func registeredTemporaryPaths() -> [String] {
    temporarySlotsLock.lock()
    defer { temporarySlotsLock.unlock() }
    return (0..<temporarySlotCount).compactMap { temporarySlots[$0].map { String(cString: $0) } }
}

/// The process umask, read without changing it (Linux reports it in /proc/self/status; the
/// umask(2) dance would briefly affect other threads creating files).
private func currentUmask() -> mode_t {
    if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) {
        for line in status.split(separator: "\n") where line.hasPrefix("Umask:") {
            let digits = line.dropFirst(6).trimmingCharacters(in: .whitespaces)
            if let m = mode_t(digits, radix: 8) { return m }
        }
    }
    let m = umask(0o022)
    umask(m)
    return m
}

/// Removes `.BASE.tmp-PID-XXXXXX` files in `folder` whose writer PID no longer runs: what a
/// writer killed by SIGKILL (which no handler sees) left behind. Temporaries of live processes,
/// including another run writing the same output now, are left alone.
/// Directories (an output folder being written) go whole; a directory output's previous version
/// set aside as `….old` while the new one moved in is put back when the output is missing (the
/// writer died between the two renames), else removed.
func removeStaleTemporaries(folder: String, base: String) {
    let prefix = ".\(base).tmp-"
    let fm = FileManager.default
    guard let names = try? fm.contentsOfDirectory(atPath: folder) else { return }
    for name in names.sorted() where name.hasPrefix(prefix) {
        let rest = name.dropFirst(prefix.count)
        guard let dash = rest.firstIndex(of: "-"), let pid = Int32(rest[..<dash]), pid > 0 else { continue }
        guard kill(pid, 0) != 0 && errno == ESRCH else { continue }
        let path = "\(folder)/\(name)", target = "\(folder)/\(base)"
        if name.hasSuffix(".old") && !fm.fileExists(atPath: target) {
            _ = rename(path, target)
        } else {
            try? fm.removeItem(atPath: path)
        }
    }
}

/// Writes a directory output as a whole: `write` fills a fresh `.BASE.tmp-PID-XXXXXX` folder beside
/// `directory`, which then replaces it (the old version is set aside, the new one renamed in, the
/// old one removed). A failure removes the temporary; what a killed writer left is cleaned up by
/// the next call for the same output.
public func writeDirectoryAtomically(_ directory: String, _ write: (String) throws -> Void) throws {
    let trimmed = directory.hasSuffix("/") && directory.count > 1 ? String(directory.dropLast()) : directory
    let folder = (trimmed as NSString).deletingLastPathComponent
    let parent = folder.isEmpty ? "." : folder
    let base = (trimmed as NSString).lastPathComponent
    removeStaleTemporaries(folder: parent, base: base)
    var template = Array("\(parent)/.\(base).tmp-\(getpid())-XXXXXX".utf8CString)
    guard let made = template.withUnsafeMutableBufferPointer({ mkdtemp($0.baseAddress!) }) else {
        throw TensorIOError.io("\(directory): cannot create a directory beside it (\(String(cString: strerror(errno))))")
    }
    let temporary = String(cString: made)
    let fm = FileManager.default
    do {
        try write(temporary)
        if fm.fileExists(atPath: trimmed) {
            let old = temporary + ".old"
            guard rename(trimmed, old) == 0, rename(temporary, trimmed) == 0 else {
                throw TensorIOError.io("\(directory): cannot replace it (\(String(cString: strerror(errno))))")
            }
            try? fm.removeItem(atPath: old)
        } else if rename(temporary, trimmed) != 0 {
            throw TensorIOError.io("\(directory): cannot create it (\(String(cString: strerror(errno))))")
        }
    } catch {
        try? fm.removeItem(atPath: temporary)
        throw error
    }
}

/// A file being written: standard output, or a temporary beside the target until `commit()`.
final class OutputFile {
    let fd: Int32
    /// The name used in messages ("<stdout>" or the target path).
    let name: String
    private let target: String?
    private let temporary: String?
    private var slot: Int?
    private var closed = false

    init(path: String) throws {
        if path == "-" {
            fd = 1
            name = "<stdout>"
            target = nil
            temporary = nil
            return
        }
        name = path
        target = path
        let slash = path.lastIndex(of: "/")
        let dir = slash.map { String(path[..<$0]) } ?? "."
        let base = slash.map { String(path[path.index(after: $0)...]) } ?? path
        guard !base.isEmpty else { throw TensorIOError.io("\(path): is a directory name") }
        var st = stat()
        var mode: mode_t = 0o666 & ~currentUmask()
        if stat(path, &st) == 0 {
            if (st.st_mode & S_IFMT) == S_IFDIR { throw TensorIOError.io("\(path): is a directory") }
            mode = st.st_mode & 0o7777
        }
        let folder = dir.isEmpty ? "/" : dir
        removeStaleTemporaries(folder: folder, base: base)
        // The writer's process id in the name: a later run can tell a killed writer's leftover.
        var template = Array("\(folder)/.\(base).tmp-\(getpid())-XXXXXX".utf8CString)
        let f = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard f >= 0 else {
            let reason = errno == ENOENT ? "no such directory" : errnoText()
            throw TensorIOError.io("\(path): cannot create a temporary file in \(dir): \(reason)")
        }
        let tmp = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        do { slot = try registerTemporary(tmp) } catch {
            unlink(tmp)
            close(f)
            throw error
        }
        _ = fcntl(f, F_SETFD, FD_CLOEXEC)
        fchmod(f, mode)
        fd = f
        temporary = tmp
    }

    deinit { discard() }

    /// The temporary's path while it exists (for tests).
    var temporaryPath: String? { closed ? nil : temporary }

    /// Makes the output durable and visible: fsync, rename over the target, fsync the folder.
    func commit() throws {
        guard let target, let temporary, !closed else { return }
        guard fsync(fd) == 0 else { throw TensorIOError.io("\(target): fsync failed: \(errnoText())") }
        closed = true
        guard close(fd) == 0 else {
            unlink(temporary)
            if let slot { unregisterTemporary(slot) }
            throw TensorIOError.io("\(target): close failed: \(errnoText())")
        }
        guard rename(temporary, target) == 0 else {
            let reason = errnoText()
            unlink(temporary)
            if let slot { unregisterTemporary(slot) }
            throw TensorIOError.io("\(target): cannot rename the temporary file into place: \(reason)")
        }
        if let slot { unregisterTemporary(slot) }
        slot = nil
        let slash = target.lastIndex(of: "/")
        let dir = slash.map { String(target[..<$0]) } ?? "."
        let dfd = open(dir.isEmpty ? "/" : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)  // best effort: some file systems refuse fsync on folders
            close(dfd)
        }
    }

    /// Removes the temporary (the target is untouched). Standard output is left open.
    func discard() {
        guard let temporary, !closed else { return }
        closed = true
        unlink(temporary)
        close(fd)
        if let slot { unregisterTemporary(slot) }
        slot = nil
    }
}

/// Buffers small writes to a file descriptor; large ones go straight through.
final class BufferedSink {
    private let output: OutputFile
    private var buffer: UnsafeMutableRawPointer
    private let capacity = 1 << 20
    private var used = 0

    init(output: OutputFile) {
        self.output = output
        buffer = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
    }

    deinit { buffer.deallocate() }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        if used + bytes.count > capacity { try flush() }
        if bytes.count >= capacity {
            try writeAll(fd: output.fd, bytes, name: output.name)
        } else if let src = bytes.baseAddress {
            (buffer + used).copyMemory(from: src, byteCount: bytes.count)
            used += bytes.count
        }
    }

    func flush() throws {
        if used > 0 {
            try writeAll(fd: output.fd, UnsafeRawBufferPointer(start: buffer, count: used),
                         name: output.name)
            used = 0
        }
    }
}

/// A writer that leaves either the whole file (`finish`) or none (`abort`).
public protocol WholeFileWriter: AnyObject {
    func finish() throws
    func abort()
}

extension WholeFileWriter {
    /// Runs `body`, which writes the contents, then finishes the file; on any error the partial
    /// file is discarded and the error rethrown.
    public func complete<R>(_ body: () throws -> R) throws -> R {
        do {
            let result = try body()
            try finish()
            return result
        } catch {
            abort()
            throw error
        }
    }
}

/// Writes a small text file (a chart, a JSON side file) whole, replacing any file there, through a
/// temporary beside it (Foundation's atomic write left an empty folder in /tmp for every file); an
/// I/O error names the path.
public func writeText(_ text: String, to path: String) throws {
    let output = try OutputFile(path: path)
    do {
        try Array(text.utf8).withUnsafeBytes { try writeAll(fd: output.fd, $0, name: output.name) }
        try output.commit()
    } catch {
        output.discard()
        throw error
    }
}
