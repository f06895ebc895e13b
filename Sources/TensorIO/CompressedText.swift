/// Reads a whole data file (text, JSONL), decompressing it when it is zstd (sniffed by the
/// magic 28 B5 2F FD, whatever its name; one frame with a checksum, as tensor files). For
/// evaluation and calibration data, which are small next to a model. "-" is standard input.
public func readDataFile(_ path: String) throws -> [UInt8] {
    let file = try openForReading(path)
    var head = [UInt8](repeating: 0, count: 4)
    let n = try head.withUnsafeMutableBytes { try file.readFully(into: $0) }
    head.removeLast(4 - n)
    var source: ByteSource = ChainedSource(prefix: head, rest: file)
    if head == zstdMagic { source = try ZstdSource(source: source, name: file.name) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 20)
    while true {
        let got = try chunk.withUnsafeMutableBytes { try source.read(into: $0) }
        if got == 0 { break }
        out.append(contentsOf: chunk[0..<got])
    }
    return out
}

/// One line of a JSONL file, parsed strictly (Foundation's JSONSerialization on Linux drops a
/// U+FEFF that follows an escape sequence, which changes C4 texts).
public enum JSONLine {
    /// The string field `key` of the object on the line: nil when the field is absent or not a
    /// string; throws when the line is not a JSON object.
    public static func stringField(_ line: UnsafeRawBufferPointer, _ key: String) throws -> String? {
        let value: JSONValue
        do { value = try JSONParser.parse(line) } catch let e as JSONSyntaxError {
            throw TensorIOError.badData("invalid JSON at byte \(e.offset): \(e.message)")
        }
        guard case .object(let fields) = value else {
            throw TensorIOError.badData("not a JSON object")
        }
        for (k, v) in fields where k == key {
            if case .string(let s) = v { return s }
            return nil
        }
        return nil
    }
}
