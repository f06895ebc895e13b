// Which kernels OpenBLAS runs. Debian 12's OpenBLAS (0.3.21, built with DYNAMIC_ARCH) picks its kernels when the
// library loads, from the CPU's model number, and falls back to its generic Prescott (SSE3) kernels on CPUs newer
// than its tables (recent Xeons): sgemm about 3× slower, and other bits than the fixtures. The only way to choose
// is the environment variable OPENBLAS_CORETYPE, read once at load; so a tool whose OpenBLAS fell back re-executes
// itself with the variable set (docs/DESIGN.md "Threads").
import _COpenBLAS
import Foundation

extension BLAS {
    /// The core type OpenBLAS chose when it loaded (e.g. "Haswell", "Cooperlake", "Prescott").
    public static var coreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }

    /// The newest OpenBLAS core type that `/proc/cpuinfo`'s flags support, as `scripts/blas-env.sh` chooses:
    /// avx512_bf16 → Cooperlake, AVX-512 F/VL/BW/DQ → SkylakeX, AVX2 + FMA → Haswell; nil otherwise.
    public static func coreType(cpuFlags: some Sequence<Substring>) -> String? {
        let flags = Set(cpuFlags)
        if flags.contains("avx512_bf16") { return "Cooperlake" }
        if ["avx512f", "avx512vl", "avx512bw", "avx512dq"].allSatisfy(flags.contains) { return "SkylakeX" }
        if flags.contains("avx2") && flags.contains("fma") { return "Haswell" }
        return nil
    }

    /// Core types with AVX2 kernels: a choice among them is OpenBLAS's own and stands.
    static let vectorCores: Set<String> = ["haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"]

    /// Called first by every tool: when the user has not set OPENBLAS_CORETYPE and OpenBLAS fell back to kernels
    /// without AVX2 on a CPU that has it, sets the variable to `coreType(cpuFlags:)` and re-executes this program with
    /// the same arguments (nothing has been read or written yet; file descriptors carry over). Returns when nothing
    /// needs doing or the re-execution fails (the generic kernels then compute the same results, slower).
    public static func reexecWithTheCPUsKernels() {
        #if os(Linux)
        if let chosen = getenv("OPENBLAS_CORETYPE"), chosen.pointee != 0 { return }
        guard !vectorCores.contains(coreName.lowercased()),
              let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
              let colon = flagsLine.firstIndex(of: ":"),
              let core = coreType(cpuFlags: flagsLine[flagsLine.index(after: colon)...].split(separator: " "))
        else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        unsetenv("OPENBLAS_CORETYPE")
        #endif
    }
}
