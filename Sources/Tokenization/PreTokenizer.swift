// Pre-tokenisation: the text is cut into pieces before BPE, as a regular expression would cut
// it, but by a hand-written scanner over Unicode scalars (no regex engine on the hot path).
//
// GPT-2's pattern (openai/gpt-2 encoder.py; also SmolLM2, and llama.cpp's "gpt-2"/"smollm"):
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+

// LLaMA-3 (llama.cpp "llama-bpe"; Qwen2 the same with \p{N} for \p{N}{1,3}):
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+

enum PreTokenizerKind: Sendable, Equatable {
    case gpt2
    case llama3
    case qwen2

    /// The regex of a Split pre-tokenizer in tokenizer.json (nil for GPT-2's ByteLevel regex).
    var splitPattern: String? {
        switch self {
        case .gpt2: return nil
        case .llama3, .qwen2:
            let digits = self == .llama3 ? "\\p{N}{1,3}" : "\\p{N}"
            return "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" + digits
                + "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
        }
    }

    func split(_ scalars: [Unicode.Scalar]) -> [Range<Int>] {
        switch self {
        case .gpt2: return splitGPT2(scalars)
        case .llama3: return splitLlama3(scalars, maxDigits: 3)
        case .qwen2: return splitLlama3(scalars, maxDigits: 1)
        }
    }
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

@inline(__always) private func isNewline(_ s: Unicode.Scalar) -> Bool { s == "\r" || s == "\n" }

/// Splits `scalars` as LLaMA-3's pattern does (Qwen2's with maxDigits 1).
func splitLlama3(_ scalars: [Unicode.Scalar], maxDigits: Int) -> [Range<Int>] {
    var out: [Range<Int>] = []
    let n = scalars.count
    let classes = scalars.map(classify)
    var i = 0
    func lower(_ s: Unicode.Scalar) -> Unicode.Scalar {
        s.value >= 0x41 && s.value <= 0x5A ? Unicode.Scalar(s.value + 32)! : s
    }
    while i < n {
        let c = scalars[i]
        // Contractions, case-insensitive.
        if c == "'" && i + 1 < n {
            let a = lower(scalars[i + 1])
            if a == "s" || a == "t" || a == "m" || a == "d" {
                out.append(i..<(i + 2)); i += 2; continue
            }
            if i + 2 < n {
                let b = lower(scalars[i + 2])
                if (a == "r" && b == "e") || (a == "v" && b == "e") || (a == "l" && b == "l") {
                    out.append(i..<(i + 3)); i += 3; continue
                }
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        var j = i
        if classes[i] != .letter && classes[i] != .number && !isNewline(c) && i + 1 < n
            && classes[i + 1] == .letter
        {
            j = i + 1
        }
        if classes[j] == .letter {
            var k = j + 1
            while k < n && classes[k] == .letter { k += 1 }
            out.append(i..<k); i = k; continue
        }
        // \p{N}{1,maxDigits}
        if classes[i] == .number {
            var k = i + 1
            while k < n && k - i < maxDigits && classes[k] == .number { k += 1 }
            out.append(i..<k); i = k; continue
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        j = (c == " " && i + 1 < n && classes[i + 1] == .other) ? i + 1 : i
        if classes[j] == .other {
            var k = j + 1
            while k < n && classes[k] == .other { k += 1 }
            while k < n && isNewline(scalars[k]) { k += 1 }
            out.append(i..<k); i = k; continue
        }
        // Whitespace: `\s*[\r\n]+` up to the run's last newline, else as GPT-2.
        var k = i + 1
        while k < n && classes[k] == .whitespace { k += 1 }
        if let last = (i..<k).last(where: { isNewline(scalars[$0]) }) {
            out.append(i..<(last + 1)); i = last + 1; continue
        }
        if k < n && k - i > 1 { k -= 1 }
        out.append(i..<k)
        i = k
    }
    return out
}
