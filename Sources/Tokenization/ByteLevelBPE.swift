// Byte-level BPE (GPT-2; Hugging Face tokenizers `models/bpe` with the ByteLevel pre-tokenizer):
// each piece's UTF-8 bytes become the printable characters of GPT-2's byte-to-unicode table,
// one initial symbol per byte, and adjacent symbols merge lowest merge-rank first (leftmost
// first among equal ranks) until no listed merge applies.

/// GPT-2's reversible map from bytes to printable Unicode scalars: printable Latin-1 bytes map
/// to themselves, the others to U+0100 upwards in byte order.
let byteToUnicode: [Unicode.Scalar] = {
    var printable = Set<Int>()
    for r in [0x21...0x7E, 0xA1...0xAC, 0xAE...0xFF] { printable.formUnion(r) }
    var next = 0x100
    return (0..<256).map { b in
        if printable.contains(b) { return Unicode.Scalar(UInt32(b))! }
        defer { next += 1 }
        return Unicode.Scalar(UInt32(next))!
    }
}()

let unicodeToByte: [UInt32: UInt8] = {
    var m: [UInt32: UInt8] = [:]
    for (b, s) in byteToUnicode.enumerated() { m[s.value] = UInt8(b) }
    return m
}()

/// Merge table keyed by the two symbol ids packed into 64 bits.
struct MergeTable {
    private var table: [UInt64: (rank: Int32, merged: Int32)] = [:]

    @inline(__always) static func key(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    mutating func add(_ a: Int32, _ b: Int32, merged: Int32, rank: Int32) {
        let k = Self.key(a, b)
        if table[k] == nil { table[k] = (rank, merged) }
    }

    @inline(__always) func lookup(_ a: Int32, _ b: Int32) -> (rank: Int32, merged: Int32)? {
        table[Self.key(a, b)]
    }

    var count: Int { table.count }
}

/// Applies the merges to one piece's initial symbols, in place.
func bpeMerge(_ symbols: inout [Int32], merges: MergeTable) {
    guard symbols.count > 1 else { return }
    while true {
        var bestRank = Int32.max, bestAt = -1, bestMerged: Int32 = 0
        for i in 0..<(symbols.count - 1) {
            if let m = merges.lookup(symbols[i], symbols[i + 1]), m.rank < bestRank {
                bestRank = m.rank
                bestAt = i
                bestMerged = m.merged
            }
        }
        if bestAt < 0 { return }
        // Merge every non-overlapping occurrence of the best pair, left to right (the same
        // outcome as merging them one by one in position order).
        let a = symbols[bestAt], b = symbols[bestAt + 1]
        var out: [Int32] = []
        out.reserveCapacity(symbols.count)
        var i = 0
        while i < symbols.count {
            if i >= bestAt && i + 1 < symbols.count && symbols[i] == a && symbols[i + 1] == b {
                out.append(bestMerged)
                i += 2
            } else {
                out.append(symbols[i])
                i += 1
            }
        }
        symbols = out
        if symbols.count == 1 { return }
    }
}

/// A token string as a dictionary key compared by its exact code points. Swift's `String ==`
/// uses canonical equivalence, under which distinct vocabulary entries (LLaMA's U+03AF and
/// U+1F77, say) would collide.
struct Exact: Hashable {
    let text: String
    init(_ text: String) { self.text = text }
    static func == (a: Exact, b: Exact) -> Bool { a.text.utf8.elementsEqual(b.text.utf8) }
    func hash(into hasher: inout Hasher) {
        var t = text
        t.withUTF8 { hasher.combine(bytes: UnsafeRawBufferPointer($0)) }
    }
}
