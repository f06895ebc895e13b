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
