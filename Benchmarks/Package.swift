// swift-tools-version:6.1
import PackageDescription

// Micro-benchmarks for brokerd's leaf modules (`swift package benchmark`, see docs/BENCHMARKS.md).
//
// Why the leaf targets are declared again here: every API worth measuring (FrameCodec, BatchCodec, CRC32C,
// DedupeIndex, Policy, TokenBucket, ...) has `package` access, and `package` symbols are visible only to targets of
// the same package. Sources/WireProtocol, LogStore, TopicRouter, Throttle, CLZ4, CCRC32C, CPrefetch and CFileIO in
// this folder are symlinks to ../../Sources/<Target>, so this package compiles the very same files as its own
// targets and the benchmarks see `package` symbols without any change to the main package's access levels. Keep the targets
// and dependencies below in step with ../Package.swift (a C target added there needs its symlink and target here
// too).
// It is a separate package so that the main package's `swift build` / `swift test` never builds package-benchmark.
let package = Package(
    name: "brokerd-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/LebJe/TOMLKit.git", from: "0.6.0"),
    ],
    targets: [
        // Same sources as the main package (symlinked), same dependencies.
        .systemLibrary(name: "CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .target(name: "CCRC32C"),
        .target(name: "CPrefetch"),
        .target(name: "CFileIO"),
        .target(
            name: "WireProtocol",
            dependencies: ["RawBytes", .product(name: "NIOCore", package: "swift-nio")]
        ),
        // A raw big-endian writer the two encoders share (they may not import each other).
        .target(name: "RawBytes", dependencies: [.product(name: "NIOCore", package: "swift-nio")]),
        .target(
            name: "LogStore",
            dependencies: [
                "CLZ4", "CCRC32C", "CPrefetch", "CFileIO", "Locking", "RawBytes",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "TopicRouter",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ]
        ),
        .target(name: "Throttle", dependencies: ["Locking"]),
        .target(
            name: "Locking",
            dependencies: [.product(name: "NIOConcurrencyHelpers", package: "swift-nio")]
        ),

        // The benchmark suite; its sources must live under Benchmarks/ for the plugin to discover it.
        .executableTarget(
            name: "BrokerMicro",
            dependencies: [
                "WireProtocol", "LogStore", "TopicRouter", "Throttle",
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/BrokerMicro",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
