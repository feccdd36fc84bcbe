// swift-tools-version:6.0
import PackageDescription

let release: [SwiftSetting] = [.unsafeFlags(["-Ounchecked"], .when(configuration: .release))]

let package = Package(
    name: "Lockstep",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "lockstep", targets: ["lockstep"]),
        // `import Lockstep`: the library a Swift program trains with (examples/spirals).
        .library(name: "Lockstep", targets: ["Lockstep"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // System libraries, found through pkg-config.
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CMPI", pkgConfig: "ompi",
                       providers: [.apt(["libopenmpi-dev", "openmpi-bin"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg",
                       providers: [.apt(["libturbojpeg0-dev"])]),

        // Elementwise loops Swift cannot vectorise (sqrt); no FMA contraction, so the same bits on any CPU.
        .target(name: "CKernels", exclude: ["README.md"],
                cSettings: [.unsafeFlags(["-O3", "-ffp-contract=off", "-fno-math-errno"])]),
        .target(name: "TensorCore", dependencies: ["CBLAS", "CKernels"], exclude: ["README.md"], swiftSettings: release),
        .target(name: "Collectives", exclude: ["README.md"], swiftSettings: release),
        .target(name: "MPICollectives", dependencies: ["Collectives", "CMPI", "TensorCore"], exclude: ["README.md"], swiftSettings: release),
        .target(name: "NN", dependencies: ["TensorCore", "Collectives", "CKernels"], exclude: ["README.md"], swiftSettings: release),
        .target(name: "Optimizers", dependencies: ["TensorCore", "NN"], exclude: ["README.md"], swiftSettings: release),
        .target(name: "Datasets", dependencies: ["TensorCore", "CZlib", "CPNG", "CTurboJPEG"], exclude: ["README.md"], swiftSettings: release),
        // File formats: safetensors, TensorBoard event files, the metrics.jsonl schema, atomic writes.
        .target(name: "Formats", exclude: ["README.md"], swiftSettings: release),
        // The strict YAML config and `--set` overrides.
        .target(name: "Configuration",
                dependencies: ["NN", "Optimizers", "Datasets", "Collectives", .product(name: "Yams", package: "Yams")],
                exclude: ["README.md"], swiftSettings: release),
        .target(name: "Training",
                dependencies: ["TensorCore", "NN", "Optimizers", "Datasets", "Collectives", "Configuration", "Formats", "CZlib", "CKernels"],
                exclude: ["README.md"], swiftSettings: release),
        // Figures and reports over runs (SVG, PNG through its own raster).
        .target(name: "Reports", dependencies: ["Formats", "Training", "CZlib"], exclude: ["README.md"], swiftSettings: release),
        // `lockstep bench` and `bench-comm`: the step profile, the roofline, the all-reduce cost model.
        .target(name: "Benchmarks", dependencies: ["Training", "Configuration", "NN", "TensorCore", "Collectives"],
                exclude: ["README.md"], swiftSettings: release),
        // The batch-norm study (`compare-bn`) and its statistics.
        .target(name: "Studies", dependencies: ["Training", "Reports", "Configuration", "Formats", "NN", "TensorCore", "Collectives", "Datasets"],
                exclude: ["README.md"], swiftSettings: release),
        // Generated from onnx.proto (see its README); the ONNX exporter builds on it.
        .target(name: "ONNXProto", dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
                exclude: ["README.md"]),
        .target(name: "Deploy", dependencies: ["NN", "Configuration", "Formats", "ONNXProto", "Datasets", "Collectives", "TensorCore",
                                               .product(name: "SwiftProtobuf", package: "swift-protobuf")],
                exclude: ["README.md"], swiftSettings: release),
        .target(name: "Launch", dependencies: ["Training", "MPICollectives", "Collectives", "TensorCore"], exclude: ["README.md"], swiftSettings: release),
        .target(name: "Lockstep", dependencies: ["Collectives", "Configuration", "Datasets", "Deploy", "Formats", "Launch", "NN", "Optimizers",
                                                 "TensorCore", "Training"],
                swiftSettings: release),
        .executableTarget(name: "lockstep",
                          dependencies: ["Training", "Configuration", "Formats", "Reports", "Benchmarks", "Studies", "Launch",
                                         "MPICollectives", "Deploy", "Datasets", "Collectives",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          exclude: ["README.md"], swiftSettings: release),

        // Fuzz harnesses (fuzz/README.md): plain builds replay a corpus, fuzz/run builds them for libFuzzer.
        .target(name: "FuzzSupport", path: "fuzz/Sources/FuzzSupport"),
        .executableTarget(name: "fuzz-idx", dependencies: ["Datasets", "FuzzSupport"], path: "fuzz/Sources/FuzzIDX"),
        .executableTarget(name: "fuzz-safetensors", dependencies: ["Formats", "FuzzSupport"], path: "fuzz/Sources/FuzzSafeTensors"),
        .executableTarget(name: "fuzz-config", dependencies: ["Configuration", "FuzzSupport"], path: "fuzz/Sources/FuzzConfig"),
        .executableTarget(name: "fuzz-tabular", dependencies: ["Datasets", "FuzzSupport"], path: "fuzz/Sources/FuzzTabular"),

        // Every test process's temporary files in one directory of its own, removed at exit.
        .target(name: "TestTemporaryFiles", path: "Tests/TestTemporaryFiles"),
        .target(name: "TestSupport", dependencies: ["TensorCore", "NN", "Collectives", "CPNG", "CTurboJPEG", "TestTemporaryFiles"], path: "Tests/TestSupport"),
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore", "CKernels", "TestSupport"]),
        .testTarget(name: "NNTests", dependencies: ["NN", "TestSupport"]),
        .testTarget(name: "OptimizersTests", dependencies: ["Optimizers", "TestSupport"]),
        .testTarget(name: "DatasetsTests", dependencies: ["Datasets", "TestSupport"]),
        .testTarget(name: "CollectivesTests", dependencies: ["Collectives", "MPICollectives", "TestSupport"]),
        // Fixtures shared by the tests of Training and the targets above it (data, configs, the CLI runner).
        .target(name: "TrainingTestSupport", dependencies: ["Training", "Datasets", "Formats", "TensorCore"], path: "Tests/TrainingTestSupport"),
        .testTarget(name: "FormatsTests", dependencies: ["Formats"]),
        .testTarget(name: "ConfigurationTests", dependencies: ["Configuration", "Training", "NN", "Optimizers", "Collectives", "TestSupport", "TrainingTestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["Training", "Configuration", "Formats", "Reports", "Datasets", "Launch",
                                                       "TestSupport", "TrainingTestSupport"]),
        .testTarget(name: "ReportsTests", dependencies: ["Reports", "Training", "Formats", "TestSupport", "TrainingTestSupport"]),
        .testTarget(name: "BenchmarksTests", dependencies: ["Benchmarks", "Training", "Configuration", "TestSupport", "TrainingTestSupport"]),
        .testTarget(name: "StudiesTests", dependencies: ["Studies", "Training", "Configuration", "Reports", "TestSupport", "TrainingTestSupport"]),
        .testTarget(name: "DeployTests", dependencies: ["Deploy", "Training", "Configuration", "Formats", "Reports", "Datasets", "TestSupport", "TrainingTestSupport"]),
        .testTarget(name: "LaunchTests", dependencies: ["Launch", "Training", "Configuration", "Collectives"]),
        // The `lockstep` executable and the launch/ scripts, run as a user runs them.
        .testTarget(name: "CLITests", dependencies: ["Training", "Configuration", "Formats", "TestSupport", "TrainingTestSupport"]),
    ],
    swiftLanguageModes: [.v5]
)
