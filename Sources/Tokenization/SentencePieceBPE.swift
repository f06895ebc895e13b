// SentencePiece-style BPE (LLaMA-1/2, Mistral), as Hugging Face `tokenizers` runs it: spaces
// become "▁" and one "▁" goes before the text; there is no pre-tokeniser, so a whole segment
// between added tokens is one word. Its initial symbols are its Unicode scalars; a scalar
// missing from the vocabulary becomes its UTF-8 bytes as "<0xXX>" tokens (byte fallback), or
// the unknown token (runs of unknowns fused into one). Adjacent symbols then merge lowest rank
// first, leftmost first among equal ranks, until no listed merge applies.
//
// A GGUF file stores scores instead of merges; the merges are generated from the scores the
// way transformers' SentencePiece converter does (`generate_merges`): every way of cutting a
// vocabulary entry into two vocabulary entries, ordered by the entry's score (higher first),
// then by the length of the left part, then the right (longer first), then by the ids of the
// entry, the left part and the right part.

/// How "▁" is put before a text segment.
enum SpacePrefix: Sendable, Equatable {
    /// The legacy LLaMA normaliser (Prepend "▁", then Replace " " → "▁"): before every segment.
    case always
    /// The Metaspace pre-tokeniser, prepend scheme "always": before every segment that does
    /// not already start with "▁" after the replacement.
    case metaspaceAlways
    /// Metaspace, prepend scheme "first": as `metaspaceAlways`, but only for a segment at the
    /// start of the text.
    case metaspaceFirst
    /// No prefix.
    case never
}

struct SentencePieceModel: Sendable {
    /// Tokens that are one Unicode scalar, by scalar value.
    var scalarSymbols: [UInt32: Int32]
    /// The "<0xXX>" token of each byte, −1 when absent; nil without byte fallback.
    var byteTokens: [Int32]?
    var unknown: Int32?
    var prefix: SpacePrefix

    static let space: Unicode.Scalar = "\u{2581}"

    init(tokens: [String], byteFallback: Bool, unknown: Int32?, prefix: SpacePrefix) {
        var scalars: [UInt32: Int32] = [:]
        var vocab: [Exact: Int32] = [:]
        for (i, t) in tokens.enumerated() {
            if vocab[Exact(t)] == nil { vocab[Exact(t)] = Int32(i) }
            let u = t.unicodeScalars
            if u.count == 1, scalars[u.first!.value] == nil { scalars[u.first!.value] = Int32(i) }
        }
        scalarSymbols = scalars
        byteTokens = byteFallback ? (0..<256).map { vocab[Exact(Self.byteTokenName(UInt8($0)))] ?? -1 } : nil
        self.unknown = unknown
        self.prefix = prefix
    }

    /// "<0x0A>": upper-case hex digits, as Rust's `{:#04X}` writes them.
    static func byteTokenName(_ b: UInt8) -> String {
        let hex = Array("0123456789ABCDEF")
        return "<0x\(hex[Int(b >> 4)])\(hex[Int(b & 15)])>"
    }

    /// The byte of a "<0xXX>" token.
    func byteValue(of token: String) -> UInt8? {
        let u = Array(token.utf8)
        guard u.count == 6, u[0] == 0x3C, u[1] == 0x30, u[2] == 0x78, u[5] == 0x3E else { return nil }
        return UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16)
    }

    /// The initial symbols of one segment: the prefix, spaces replaced, scalars looked up.
    func symbols(of segment: Substring.UnicodeScalarView, atStart: Bool) -> [Int32] {
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(segment.count + 1)
        for s in segment { scalars.append(s == " " ? Self.space : s) }
        guard !scalars.isEmpty else { return [] }
        switch prefix {
        case .always: scalars.insert(Self.space, at: 0)
        case .metaspaceAlways where scalars[0] != Self.space: scalars.insert(Self.space, at: 0)
        case .metaspaceFirst where atStart && scalars[0] != Self.space: scalars.insert(Self.space, at: 0)
        default: break
        }
        var out: [Int32] = []
        out.reserveCapacity(scalars.count)
        var pendingUnknown = false
        for s in scalars {
            if let id = scalarSymbols[s.value] {
                if pendingUnknown, let unk = unknown { out.append(unk) }
                pendingUnknown = false
                out.append(id)
                continue
            }
            if let bytes = byteTokens {
                let ids = UTF8.encode(s)!.map { bytes[Int($0)] }
                if !ids.contains(-1) {
                    if pendingUnknown, let unk = unknown { out.append(unk) }
                    pendingUnknown = false
                    out.append(contentsOf: ids)
                    continue
                }
            }
            // Unknown: runs fuse into one unknown token; dropped when there is none.
            if unknown != nil { pendingUnknown = true }
        }
        if pendingUnknown, let unk = unknown { out.append(unk) }
        return out
    }

    /// Merges generated from scores, in rank order (see the comment at the top of the file).
    static func merges(tokens: [String], scores: [Float]) -> [(String, String)] {
        var vocab: [Exact: Int] = [:]
        for (i, t) in tokens.enumerated() { vocab[Exact(t)] = i }  // the last id wins, as a Python dict
        struct Entry { var score: Float; var id: Int; var l: Int; var r: Int; var ll: Int; var lr: Int }
        var entries: [Entry] = []
        for (id, piece) in tokens.enumerated() {
            let scalars = Array(piece.unicodeScalars)
            guard scalars.count > 1 else { continue }
            for k in 1..<scalars.count {
                var left = String.UnicodeScalarView(), right = String.UnicodeScalarView()
                left.append(contentsOf: scalars[..<k])
                right.append(contentsOf: scalars[k...])
                if let l = vocab[Exact(String(left))], let r = vocab[Exact(String(right))] {
                    entries.append(Entry(score: scores[id], id: id, l: l, r: r, ll: k, lr: scalars.count - k))
                }
            }
        }
        entries.sort { a, b in
            if a.score != b.score { return a.score > b.score }
            if a.ll != b.ll { return a.ll > b.ll }
            if a.lr != b.lr { return a.lr > b.lr }
            if a.id != b.id { return a.id < b.id }
            if a.l != b.l { return a.l < b.l }
            return a.r < b.r
        }
        return entries.map { (tokens[$0.l], tokens[$0.r]) }
    }
}

/// Hugging Face's `Word::merge_all`: a min-heap of candidate merges ordered by rank, then
/// position; a popped candidate is applied only if the pair at its position still forms it.
/// O(n log n), so that a long segment (a whole document) costs no more than its pieces.
func bpeMergeHeap(_ initial: [Int32], merges: MergeTable) -> [Int32] {
    let n = initial.count
    guard n > 1 else { return initial }
    var ids = initial
    var prev = Array(-1..<(n - 1)), next = Array(1...n)
    next[n - 1] = -1
    var alive = [Bool](repeating: true, count: n)
    struct Candidate { var rank: Int32; var pos: Int32; var merged: Int32 }
    var heap: [Candidate] = []
    heap.reserveCapacity(n)
    func less(_ a: Candidate, _ b: Candidate) -> Bool { a.rank != b.rank ? a.rank < b.rank : a.pos < b.pos }
    func push(_ c: Candidate) {
        heap.append(c)
        var i = heap.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            if !less(heap[i], heap[p]) { break }
            heap.swapAt(i, p)
            i = p
        }
    }
    func pop() -> Candidate {
        let top = heap[0]
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            var i = 0
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && less(heap[l], heap[m]) { m = l }
                if r < heap.count && less(heap[r], heap[m]) { m = r }
                if m == i { break }
                heap.swapAt(i, m)
                i = m
            }
        }
        return top
    }
    for i in 0..<(n - 1) {
        if let m = merges.lookup(ids[i], ids[i + 1]) { push(Candidate(rank: m.rank, pos: Int32(i), merged: m.merged)) }
    }
    while !heap.isEmpty {
        let c = pop()
        let i = Int(c.pos)
        guard alive[i], next[i] >= 0 else { continue }
        let j = next[i]
        guard let m = merges.lookup(ids[i], ids[j]), m.merged == c.merged else { continue }
        ids[i] = c.merged
        alive[j] = false
        next[i] = next[j]
        if next[j] >= 0 { prev[next[j]] = i }
        if prev[i] >= 0, let m = merges.lookup(ids[prev[i]], ids[i]) {
            push(Candidate(rank: m.rank, pos: Int32(prev[i]), merged: m.merged))
        }
        if next[i] >= 0, let m = merges.lookup(ids[i], ids[next[i]]) {
            push(Candidate(rank: m.rank, pos: Int32(i), merged: m.merged))
        }
    }
    var out: [Int32] = []
    out.reserveCapacity(n)
    var i = 0
    while i >= 0 {
        out.append(ids[i])
        i = next[i]
    }
    return out
}
