// The safetensors header: 8-byte little-endian length, then a JSON object naming each tensor's
// dtype, shape and [begin, end) byte range in the data section that follows.
//
// Validation follows huggingface/safetensors `src/tensor.rs` (header ≤ 100 MB, starts with '{',
// offsets contiguous from 0, byte count = elements × size, no trailing bytes) and adds duplicate-key
// detection. Every message names the file, the tensor and the numbers.

/// Largest header accepted, as in the safetensors library (MAX_HEADER_SIZE).
public let safetensorsMaxHeaderLength = 100_000_000

public struct TensorEntry: Equatable, Sendable {
    public var name: String
    public var dtype: DType
    public var shape: [Int]

    public init(name: String, dtype: DType, shape: [Int]) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
    }

    /// Product of the shape (1 for a scalar []). Entries read from files are overflow-checked;
    /// use `checkedByteCount` for entries of unknown origin.
    public var elementCount: Int { shape.reduce(1, *) }
    public var byteCount: Int { elementCount * dtype.size }

    /// elements × size, or nil if a dimension is negative or the product overflows.
    public var checkedByteCount: Int? {
        var n = dtype.size
        for d in shape {
            guard d >= 0 else { return nil }
            let (p, overflow) = n.multipliedReportingOverflow(by: d)
            if overflow { return nil }
            n = p
        }
        return n
    }
}

public struct SafetensorsHeader: Sendable {
    public var metadata: [String: String]
    /// In data-offset (file) order.
    public private(set) var entries: [TensorEntry]
    /// Byte offset of each entry's data within the data section (parallel to `entries`).
    public private(set) var offsets: [Int]
    private var index: [String: Int]

    /// A header for tensors laid out contiguously in the given order.
    public init(metadata: [String: String], entries: [TensorEntry]) throws {
        self.metadata = metadata
        self.entries = entries
        offsets = []
        index = [:]
        dataLength = 0
        var at = 0
        for (k, e) in entries.enumerated() {
            guard !e.name.isEmpty, e.name != "__metadata__" else {
                throw TensorIOError.badData("invalid tensor name '\(e.name)'")
            }
            guard index.updateValue(k, forKey: e.name) == nil else {
                throw TensorIOError.badData("duplicate tensor name '\(e.name)'")
            }
            guard let n = e.checkedByteCount, case (let end, false) = at.addingReportingOverflow(n)
            else {
                throw TensorIOError.badData(
                    "tensor '\(e.name)': shape \(e.shape) of \(e.dtype) is invalid or too large")
            }
            offsets.append(at)
            at = end
        }
        dataLength = at
    }

    /// Total bytes of the data section.
    public private(set) var dataLength: Int

    public func entry(_ name: String) -> TensorEntry? { index[name].map { entries[$0] } }

    /// Position of `name` in `entries`.
    public func position(of name: String) -> Int? { index[name] }

    /// The header text, padded with spaces to a multiple of 8 bytes, as the safetensors library
    /// writes it: `__metadata__` first (keys sorted, so output is deterministic), then the tensors
    /// in order; omitted when there is no metadata.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        if !metadata.isEmpty {
            appendJSONString("__metadata__", to: &out)
            out.append(contentsOf: Array(":{".utf8))
            for (k, (key, value)) in metadata.sorted(by: { $0.key < $1.key }).enumerated() {
                if k > 0 { out.append(UInt8(ascii: ",")) }
                appendJSONString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                appendJSONString(value, to: &out)
            }
            out.append(UInt8(ascii: "}"))
            first = false
        }
        for (k, e) in entries.enumerated() {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            appendJSONString(e.name, to: &out)
            let shape = e.shape.map(String.init).joined(separator: ",")
            let begin = offsets[k], end = offsets[k] + e.byteCount
            out.append(contentsOf: Array(
                ":{\"dtype\":\"\(e.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(begin),\(end)]}".utf8))
        }
        out.append(UInt8(ascii: "}"))
        while out.count % 8 != 0 { out.append(UInt8(ascii: " ")) }
        return out
    }

    /// Parses and validates header text (the bytes after the length). Checks everything that does
    /// not need the data section; the caller compares `dataLength` with the bytes available.
    static func parse(_ text: UnsafeRawBufferPointer, source: String) throws -> SafetensorsHeader {
        func bad(_ m: String) -> TensorIOError { .badData("\(source): \(m)") }
        guard let first = text.first, first == UInt8(ascii: "{") else {
            let shown = text.first.map { "0x" + String($0, radix: 16) } ?? "nothing"
            throw bad("the header does not start with '{' (found \(shown)): not a safetensors file")
        }
        guard validUTF8(text) else {
            throw bad("the header is not valid UTF-8")
        }
        let json: JSONValue
        do { json = try JSONParser.parse(text) } catch let e as JSONSyntaxError {
            if e.message.hasPrefix("duplicate key") {
                throw bad("\(e.message) in the header (byte \(e.offset))")
            }
            throw bad("invalid header JSON at byte \(e.offset): \(e.message)")
        }
        guard case .object(let members) = json else { throw bad("the header is not a JSON object") }
        var metadata: [String: String] = [:]
        var found: [(entry: TensorEntry, begin: Int, end: Int)] = []
        for (key, value) in members {
            if key == "__metadata__" {
                guard case .object(let pairs) = value else {
                    throw bad("__metadata__ is \(value.kindName), not an object of strings")
                }
                for (k, v) in pairs {
                    guard case .string(let s) = v else {
                        throw bad("__metadata__ value for '\(k)' is \(v.kindName), not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            found.append(try parseEntry(key, value, bad: bad))
        }
        // File order: by begin, then end, so a 0-byte tensor precedes a tensor at the same offset;
        // ties keep header order.
        let order = found.indices.sorted {
            (found[$0].begin, found[$0].end, $0) < (found[$1].begin, found[$1].end, $1)
        }
        var at = 0
        var previous: String?
        for k in order {
            let (e, begin, end) = found[k]
            guard begin == at else {
                let size = end - begin
                let why = begin > at
                    ? "a gap of \(begin - at) bytes after \(previous.map { "'\($0)'" } ?? "the start")"
                    : "overlapping '\(previous ?? "")' by \(at - begin) bytes"
                throw bad("invalid data_offsets for '\(e.name)': [\(begin), \(end)], expected "
                          + "[\(at), \(at + size)] (\(why))")
            }
            at = end
            if end > begin { previous = e.name }
        }
        // The layout's own checks (an empty tensor name gets past the ones above) know no file.
        do {
            return try SafetensorsHeader(metadata: metadata, entries: order.map { found[$0].entry })
        } catch let e as TensorIOError {
            throw bad(e.message)
        }
    }

    private static func parseEntry(_ name: String, _ value: JSONValue,
                                   bad: (String) -> TensorIOError) throws
        -> (entry: TensorEntry, begin: Int, end: Int)
    {
        guard case .object(let fields) = value else {
            throw bad("tensor '\(name)' is described by \(value.kindName), not an object")
        }
        var dtype: DType?, shape: [Int]?, offsets: [Int]?
        for (k, v) in fields {
            switch k {
            case "dtype":
                guard case .string(let s) = v else { throw bad("tensor '\(name)': dtype is \(v.kindName), not a string") }
                guard let d = DType(rawValue: s) else {
                    throw bad("tensor '\(name)': unknown dtype '\(s)' (known: "
                              + DType.allCases.map(\.rawValue).joined(separator: ", ") + ")")
                }
                dtype = d
            case "shape":
                shape = try integers(v, field: "shape", tensor: name, bad: bad)
            case "data_offsets":
                let o = try integers(v, field: "data_offsets", tensor: name, bad: bad)
                guard o.count == 2 else {
                    throw bad("tensor '\(name)': data_offsets has \(o.count) numbers, not 2")
                }
                guard o[0] <= o[1] else {
                    throw bad("invalid data_offsets for '\(name)': [\(o[0]), \(o[1])] (begin after end)")
                }
                offsets = o
            default:
                throw bad("tensor '\(name)': unexpected field '\(k)' (expected dtype, shape, data_offsets)")
            }
        }
        guard let dtype else { throw bad("tensor '\(name)': missing dtype") }
        guard let shape else { throw bad("tensor '\(name)': missing shape") }
        guard let offsets else { throw bad("tensor '\(name)': missing data_offsets") }
        let entry = TensorEntry(name: name, dtype: dtype, shape: shape)
        guard let bytes = entry.checkedByteCount else {
            throw bad("tensor '\(name)': shape \(shape) of \(dtype) overflows: more than \(Int.max) bytes")
        }
        guard offsets[1] - offsets[0] == bytes else {
            throw bad("tensor '\(name)': data_offsets [\(offsets[0]), \(offsets[1])] span "
                      + "\(offsets[1] - offsets[0]) bytes, but shape \(shape) of \(dtype) needs "
                      + "\(entry.elementCount) × \(dtype.size) = \(bytes)")
        }
        return (entry, offsets[0], offsets[1])
    }

    /// An array of non-negative integers that fit in Int.
    private static func integers(_ v: JSONValue, field: String, tensor: String,
                                 bad: (String) -> TensorIOError) throws -> [Int] {
        guard case .array(let items) = v else {
            throw bad("tensor '\(tensor)': \(field) is \(v.kindName), not an array of non-negative integers")
        }
        return try items.map { item in
            guard case .number(let text) = item, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 })
            else {
                throw bad("tensor '\(tensor)': \(field) must hold non-negative integers, found "
                          + "\(item.kindName)")
            }
            guard let n = Int(text) else {
                throw bad("tensor '\(tensor)': \(field) value \(text) is out of range (max \(Int.max))")
            }
            return n
        }
    }
}

/// Whether `b` is well-formed UTF-8 (no overlong forms, surrogates or values past U+10FFFF).
func validUTF8(_ b: UnsafeRawBufferPointer) -> Bool {
    var decoder = UTF8()
    var it = b.makeIterator()
    while true {
        switch decoder.decode(&it) {
        case .scalarValue: continue
        case .emptyInput: return true
        case .error: return false
        }
    }
}
