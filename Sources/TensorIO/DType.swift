/// Element types of safetensors files, named as the format names them.
public enum DType: String, Sendable, CaseIterable {
    case F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .F64, .I64: return 8
        case .F32, .I32: return 4
        case .F16, .BF16, .I16: return 2
        case .I8, .U8, .BOOL: return 1
        }
    }
}

extension DType {
    /// I64, I32, I16, I8, U8 (not BOOL).
    public var isInteger: Bool { [.I64, .I32, .I16, .I8, .U8].contains(self) }
}
