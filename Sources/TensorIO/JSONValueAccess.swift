// Reading fields of a parsed JSON value, and writing one back as compact JSON text.

extension JSONValue {
    /// Parses UTF-8 JSON text strictly; non-UTF-8 input is refused.
    public static func parse(_ data: [UInt8]) throws -> JSONValue {
        guard String(validating: data, as: UTF8.self) != nil else {
            throw JSONSyntaxError(offset: 0, message: "the text is not valid UTF-8")
        }
        return try data.withUnsafeBytes { try JSONParser.parse($0) }
    }

    /// The member `key` of an object (nil for a missing member or a non-object). Keys compare
    /// by exact bytes.
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        let k = Array(key.utf8)
        return members.first { $0.key.utf8.elementsEqual(k) }?.value
    }

    public var members: [(key: String, value: JSONValue)]? {
        if case .object(let m) = self { return m }
        return nil
    }

    public var items: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var string: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// An integer written without fraction or exponent.
    public var int: Int? {
        if case .number(let t) = self { return Int(t) }
        return nil
    }

    public var double: Double? {
        if case .number(let t) = self { return Double(t) }
        return nil
    }

    public var bool: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// Compact JSON text: members in their order, strings escaped as serde_json does.
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        write(to: &out)
        return out
    }

    public func write(to out: inout [UInt8]) {
        switch self {
        case .object(let members):
            out.append(UInt8(ascii: "{"))
            for (i, m) in members.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                appendJSONString(m.key, to: &out)
                out.append(UInt8(ascii: ":"))
                m.value.write(to: &out)
            }
            out.append(UInt8(ascii: "}"))
        case .array(let items):
            out.append(UInt8(ascii: "["))
            for (i, v) in items.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                v.write(to: &out)
            }
            out.append(UInt8(ascii: "]"))
        case .string(let s): appendJSONString(s, to: &out)
        case .number(let t): out.append(contentsOf: t.utf8)
        case .bool(let b): out.append(contentsOf: (b ? "true" : "false").utf8)
        case .null: out.append(contentsOf: "null".utf8)
        }
    }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral 
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .number(String(value)) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(elements.map { (key: $0.0, value: $0.1) })
    }
    public static func int(_ v: Int) -> JSONValue { .number(String(v)) }
}
