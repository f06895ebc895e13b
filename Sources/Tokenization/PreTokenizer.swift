// Pre-tokenisation: the text is cut into pieces before BPE, as a regular expression would cut
// it, but by a hand-written scanner over Unicode scalars (no regex engine on the hot path).
//
// GPT-2's pattern (openai/gpt-2 encoder.py; also SmolLM2, and llama.cpp's "gpt-2"/"smollm"):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+

enum PreTokenizerKind: Sendable, Equatable {
    case gpt2
}

/// Character classes the patterns use.
enum CharClass {
    case letter, number, whitespace, other
}

@inline(__always) func classify(_ s: Unicode.Scalar) -> CharClass {
    let v = s.value
    if v < 0x80 {
        if (v >= 0x61 && v <= 0x7A) || (v >= 0x41 && v <= 0x5A) { return .letter }
        if v >= 0x30 && v <= 0x39 { return .number }
        if v == 0x20 || (v >= 0x09 && v <= 0x0D) { return .whitespace }
        return .other
    }
    if s.properties.isWhitespace { return .whitespace }
    switch s.properties.generalCategory {
    case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
        return .letter
    case .decimalNumber, .letterNumber, .otherNumber:
        return .number
    default:
        return .other
    }
}

/// Splits `scalars` into the pieces GPT-2's pattern matches; returns [start, end) ranges.
func splitGPT2(_ scalars: [Unicode.Scalar]) -> [Range<Int>] {
    var out: [Range<Int>] = []
    let n = scalars.count
    var classes = [CharClass]()
    classes.reserveCapacity(n)
    for s in scalars { classes.append(classify(s)) }
    var i = 0
    while i < n {
        let c = scalars[i]
        // Contractions: 's 't 're 've 'm 'll 'd (lower case only in GPT-2's pattern).
        if c == "'" && i + 1 < n {
            let a = scalars[i + 1]
            if a == "s" || a == "t" || a == "m" || a == "d" {
                out.append(i..<(i + 2)); i += 2; continue
            }
            if i + 2 < n {
                let b = scalars[i + 2]
                if (a == "r" && b == "e") || (a == "v" && b == "e") || (a == "l" && b == "l") {
                    out.append(i..<(i + 3)); i += 3; continue
                }
            }
        }
        // ` ?X+` for X = letters, numbers, or neither-space-letter-nor-number.
        var start = i
        var j = i
        if c == " " && i + 1 < n && classes[i + 1] != .whitespace { j = i + 1 }
        let cls = classes[j]
        if cls != .whitespace {
            var k = j + 1
            while k < n && classes[k] == cls { k += 1 }
            out.append(start..<k)
            i = k
            continue
        }
        // Whitespace: `\s+(?!\S)` leaves the last space to the next piece when a non-space
        // follows; `\s+` takes a single whitespace character before a non-space.
        start = i
        var k = i + 1
        while k < n && classes[k] == .whitespace { k += 1 }
        if k < n && k - start > 1 { k -= 1 }
        out.append(start..<k)
        i = k
    }
    return out
}
