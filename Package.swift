// swift-tools-version:6.0
import PackageDescription

// Dependency order (enforced by the targets below; each module imports only modules to its left):
//   _CZstd, _COpenBLAS, _CSpin  →  TensorIO, Kernels  →  Tokenization  →  LlamaModel  →  Evaluation  →  Calibration
//   →  Pruning;  LlamaModel  →  Training (LoRA fine-tuning);  ToolSupport (options, progress, errors) stands on
//   TensorIO and Kernels only; each tool (Sources/<tool>/main.swift) depends on ToolSupport and the library modules it calls.
//
// Release builds are -O: bounds, overflow and precondition checks stay live in every target.
// bench/unchecked.sh measured what -Ounchecked would buy, stage by stage, and found nothing outside the
// noise (convert 0.98×, tokenize 1.05×, evaluate 1.03×, calibrate 0.98×, score 1.06×, restore 0.96×; figures
// in docs/DESIGN.md "Builds"), so no target drops its checks. PRUNEKIT_UNCHECKED=1 builds every target
// -Ounchecked, for that comparison.
let cpu: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
let fast: [SwiftSetting] = cpu + [.unsafeFlags(
    Context.environment["PRUNEKIT_UNCHECKED"] == "1" ? ["-Ounchecked", "-wmo"] : ["-wmo"], .when(configuration: .release))]

let package = Package(
    name: "PruneKit",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "convert", targets: ["convert"]),
        .executable(name: "evaluate", targets: ["evaluate"]),
        .executable(name: "calibrate", targets: ["calibrate"]),
        .executable(name: "score", targets: ["score"]),
        .executable(name: "allocate", targets: ["allocate"]),
        .executable(name: "slice", targets: ["slice"]),
        .executable(name: "restore", targets: ["restore"]),
        .executable(name: "finetune", targets: ["finetune"]),
        .executable(name: "prunekit-fuzz", targets: ["prunekit-fuzz"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0")
    ],
    targets: [
        .systemLibrary(name: "_CZstd", pkgConfig: "libzstd"),
        .systemLibrary(name: "_COpenBLAS", pkgConfig: "openblas"),
        .target(name: "TensorIO", dependencies: ["_CZstd"], swiftSettings: fast),
        .target(name: "_CSpin"),
        .target(name: "Kernels", dependencies: ["_COpenBLAS", "_CSpin"], swiftSettings: fast),
        .target(name: "Tokenization", dependencies: ["TensorIO"], swiftSettings: fast),
        .target(name: "LlamaModel", dependencies: ["TensorIO", "Kernels", "Tokenization"],
                swiftSettings: fast),
        .target(name: "Evaluation", dependencies: ["LlamaModel", "Tokenization", "Kernels"],
                swiftSettings: fast),
        .target(name: "Calibration", dependencies: ["LlamaModel", "Evaluation", "Kernels", "TensorIO", "Tokenization"],
                swiftSettings: fast),
        .target(name: "Pruning", dependencies: ["Calibration", "LlamaModel", "TensorIO", "Kernels"], swiftSettings: fast),
        .target(name: "Training", dependencies: ["LlamaModel", "Tokenization", "TensorIO", "Kernels"], swiftSettings: fast),
        .target(name: "ToolSupport",
                dependencies: ["TensorIO", "Kernels", .product(name: "ArgumentParser", package: "swift-argument-parser")],
                swiftSettings: fast),
        .executableTarget(name: "convert", dependencies: ["ToolSupport", "LlamaModel"],
                          swiftSettings: fast),
        .executableTarget(name: "evaluate", dependencies: ["ToolSupport", "LlamaModel", "Evaluation"],
                          swiftSettings: fast),
        .executableTarget(name: "calibrate", dependencies: ["ToolSupport", "LlamaModel", "Calibration", "Pruning"],
                          swiftSettings: fast),
        .executableTarget(name: "score", dependencies: ["ToolSupport", "LlamaModel", "Calibration", "Pruning"],
                          swiftSettings: fast),
        .executableTarget(name: "allocate", dependencies: ["ToolSupport", "LlamaModel", "Calibration", "Pruning"],
                          swiftSettings: fast),
        .executableTarget(name: "slice", dependencies: ["ToolSupport", "LlamaModel", "Pruning"], swiftSettings: fast),
        .executableTarget(name: "restore", dependencies: ["ToolSupport", "LlamaModel", "Calibration", "Pruning"],
                          swiftSettings: fast),
        .executableTarget(name: "finetune", dependencies: ["ToolSupport", "LlamaModel", "Calibration", "Training"], swiftSettings: fast),
        .executableTarget(name: "prunekit-fuzz", dependencies: ["TensorIO", "Tokenization", "LlamaModel", "Evaluation", "Calibration", "Pruning",
                                                            "Training"],
                          path: "Tests/Fuzz/Sources", swiftSettings: cpu),
        .executableTarget(name: "prunekit-bench", dependencies: ["Kernels", "TensorIO", "LlamaModel", "Evaluation"],
                          path: "bench/Sources/prunekit-bench", swiftSettings: fast),
        .executableTarget(name: "tokenize", dependencies: ["ToolSupport", "Tokenization"], swiftSettings: fast),
        .target(name: "TestSupport", dependencies: ["TensorIO"], path: "Sources/TestSupport"),
        .testTarget(name: "TensorIOTests", dependencies: ["TensorIO", "TestSupport"], swiftSettings: fast),
        .testTarget(name: "TokenizationTests", dependencies: ["Tokenization", "TestSupport"], swiftSettings: fast),
        .testTarget(name: "KernelsTests", dependencies: ["Kernels", "TestSupport"], swiftSettings: fast),
        .testTarget(name: "LlamaModelTests", dependencies: ["LlamaModel", "TestSupport"], swiftSettings: fast),
        .testTarget(name: "EvaluationTests", dependencies: ["Evaluation", "LlamaModel", "Tokenization", "TensorIO", "TestSupport"],
                    swiftSettings: fast),
        .testTarget(name: "CalibrationTests", dependencies: ["Calibration", "LlamaModel", "Tokenization", "TestSupport"],
                    swiftSettings: fast),
        .testTarget(name: "PruningTests", dependencies: ["Pruning", "Calibration", "LlamaModel", "Kernels", "TensorIO", "TestSupport"],
                    swiftSettings: fast),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "LlamaModel", "Tokenization", "TensorIO", "TestSupport"],
                    swiftSettings: fast),
        .testTarget(name: "ToolTests", dependencies: ["TestSupport", "TensorIO", "LlamaModel", "Kernels"], swiftSettings: fast),
    ],
    swiftLanguageModes: [.v5]
)
